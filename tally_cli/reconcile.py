"""`tally reconcile`: queue a reconcile request for the event handler, or run reconciliation here.

Queued (the default): a message on the object-events topic with data `{}` and attributes
`tally-request=reconcile` (+ `prefix`, or `all=true`), as the Cloud Scheduler job publishes it; the
event handler examines the runs, resuming itself page by page. Without a prefix it visits the
runs that may be open (tally's open-run index); `--all` walks every run folder.
In process (`--local`, and always for `--dry-run`): the event handler's own code path
(tally_handler.reconcile) with this machine's credentials, page after page until done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tally_cli.clients import Clients, dependency
from tally_cli.config import Settings
from tally_cli.errors import ConfigError
from tally_cli.status import handler_code

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
    env = {
        "TALLY_PROJECT": settings.require("project"),
        "TALLY_OUTPUTS_BUCKET": settings.require("outputs_bucket"),
        "TALLY_REGISTRY_URL": settings.require("registry_url"),
        "TALLY_COMPLETIONS_TOPIC": settings.completions_topic,
        "TALLY_EVENTS_TABLE": settings.table("events"),
        "TALLY_RUNS_TABLE": settings.table("runs"),
        "TALLY_LAYOUT": settings.layout,
        "TALLY_MANIFEST_NAME": settings.manifest_name,
        "TALLY_FAILURE_MARKER": settings.failure_marker,
    }
    if settings.storage_emulator or settings.pubsub_emulator or settings.bigquery_endpoint:
        env["TALLY_REGISTRY_AUTH"] = "none"
    for name, var in (
        ("storage_emulator", "STORAGE_EMULATOR_HOST"),
        ("pubsub_emulator", "PUBSUB_EMULATOR_HOST"),
        ("bigquery_endpoint", "TALLY_BIGQUERY_ENDPOINT"),
    ):
        if getattr(settings, name):
            env[var] = str(getattr(settings, name))
    return env


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_locally(
    clients: Clients,
    prefix: str | None,
    max_runs: int,
    dry_run: bool,
    progress: Callable[[int], None] = lambda _n: None,
    every_run: bool = False,
) -> dict[str, Any]:
    """Reconcile in this process, page after page, until the walk is done."""
    settings = clients.settings
    handler_code()
    from tally_handler.app import App
    from tally_handler.config import Config
    from tally_handler.config import ConfigError as HandlerConfigError
    from tally_handler.delivery import Reconcile

    totals: dict[str, Any] = {"queued": False, "dry_run": dry_run, "examined": 0}
    totals.update({key: [] for key in REPORT_KEYS})
    token = None
    env = handler_environment(settings)
    with _environment(env), dependency(settings, "Storage"):
        try:
            app = App(Config.from_env(os.environ))
        except HandlerConfigError as exc:
            raise ConfigError(str(exc)) from None
        while True:
            request = Reconcile(prefix=prefix, page_token=token, every_run=every_run)
            report = app.reconcile_locally(request, max_runs, dry_run)
            totals["examined"] += report.examined
            for key in REPORT_KEYS:
                totals[key].extend(getattr(report, key))
            progress(totals["examined"])
            token = report.next_page_token
            if not token or report.examined == 0:
                return totals
