"""`tally reconcile`: queue a reconcile request for the event handler, or run reconciliation here.

Queued (the default): a message on the object-events topic with data `{}` and attributes
`tally-request=reconcile` (+ `prefix`, or `all=true`), as the Cloud Scheduler job publishes it; the
event handler examines the runs, resuming itself page by page. Without a prefix it visits the
runs that may be open (tally's open-run index); `--all` walks every run folder.
In process (`--local`, and always for `--dry-run`): the event handler's own code path
(tally_handler.reconcile) with this machine's credentials, page after page until done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tally_cli.clients import Clients, dependency
from tally_cli.config import Settings
from tally_cli.errors import ConfigError
from tally_cli.status import handler_code

__all__ = [
    "REPORT_KEYS",
    "REQUEST_ATTRIBUTE",
    "handler_environment",
    "local_app",
    "queue_request",
    "run_locally",
]

REQUEST_ATTRIBUTE = "tally-request"


REPORT_KEYS = ("announced", "stalled", "incomplete", "changed", "restored", "announcing", "blocked")


def queue_request(clients: Clients, prefix: str | None, every_run: bool = False) -> dict[str, Any]:
    settings = clients.settings
    topic = settings.topic_path(settings.object_events_topic)
    attributes = {REQUEST_ATTRIBUTE: "reconcile"}
    if prefix:
        attributes["prefix"] = prefix
    if every_run:
        attributes["all"] = "true"
    with dependency(settings, "Pub/Sub"):
        future = clients.publisher().publish(
            topic, b"{}", retry=clients.retry(), timeout=settings.timeout, **attributes
        )
        message_id = str(future.result(timeout=settings.timeout))
    return {"queued": True, "topic": topic, "message_id": message_id, "attributes": attributes}


def handler_environment(settings: Settings) -> dict[str, str]:
    """The event handler's configuration (docs/design.md) from the CLI's settings."""
    from tally_handler import config as handler

    local = settings.storage_emulator or settings.pubsub_emulator or settings.bigquery_endpoint
    return {
        handler.PROJECT: settings.require("project"),
        handler.OUTPUTS_BUCKET: settings.require("outputs_bucket"),
        handler.REGISTRY_URL: settings.require("registry_url"),
        handler.REGISTRY_AUTH: "none" if local else "id-token",
        handler.COMPLETIONS_TOPIC: settings.completions_topic,
        handler.EVENTS_TABLE: settings.table("events"),
        handler.RUNS_TABLE: settings.table("runs"),
        handler.LAYOUT: settings.layout,
        handler.MANIFEST_NAME: settings.manifest_name,
        handler.FAILURE_MARKER: settings.failure_marker,
    }


def local_app(clients: Clients) -> Any:
    """The event handler's App over this CLI's own clients (its emulators or credentials):
    no environment variable is changed."""
    from tally_handler import adapters
    from tally_handler.app import App
    from tally_handler.config import Config
    from tally_handler.errors import ConfigError as HandlerConfigError

    try:
        config = Config.from_env(handler_environment(clients.settings))
    except HandlerConfigError as exc:
        raise ConfigError(str(exc)) from None
    return App(
        config,
        storage=adapters.StorageGateway(config.project, clients.storage()),
        publisher=adapters.PubSubPublisher(
            config.project, config.completions_topic, clients.publisher()
        ),
        event_log=adapters.EventLog(
            config.project, config.events_table, config.runs_table, clients.bigquery()
        ),
    )


def run_locally(
    clients: Clients,
    prefix: str | None,
    max_runs: int,
    dry_run: bool,
    progress: Callable[[int], None] = lambda _n: None,
    every_run: bool = False,
) -> dict[str, Any]:
    """Reconcile in this process, page after page, until the walk is done."""
    handler_code()
    from tally_handler.delivery import Reconcile
    from tally_handler.errors import PrefixOutsideLayout

    totals: dict[str, Any] = {"queued": False, "dry_run": dry_run, "examined": 0}
    totals.update({key: [] for key in REPORT_KEYS})
    token = None
    with dependency(clients.settings, "Storage"):
        app = local_app(clients)
        while True:
            request = Reconcile(prefix=prefix, page_token=token, every_run=every_run)
            try:
                report = app.reconcile_locally(request, max_runs, dry_run)
            except PrefixOutsideLayout as exc:
                raise ConfigError(f"--prefix: {exc}; give a prefix inside the layout") from None
            totals["examined"] += report.examined
            for key in REPORT_KEYS:
                totals[key].extend(getattr(report, key))
            progress(totals["examined"])
            token = report.next_page_token
            if not token or report.examined == 0:
                return totals
