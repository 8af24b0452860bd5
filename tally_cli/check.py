"""`tally check`: prove a deployment end to end with a run of its own.

Steps, in order; a step that fails stops the ones that need it (they are reported `skipped`):

1. registry       the registry answers (GET /workflows)
2. register       the reserved workflow tally-check 1.0.0 is registered (created or unchanged)
3. refuse-unauth  a write without a token is refused (401/403)
4. subscription   the check subscription on the completions topic exists (or a temporary one)
5. write-run      a two-output run tally-check/1.0.0/check-.../ is written to the outputs bucket
6. announcement   its completion message arrives, COMPLETE, once
7. manifest       the manifest in the run folder lists the outputs written
8. event-log      the events table has a row per output and the announcing row
9. runs-row       the runs table has the run's row
10. cleanup       the objects written (and a temporary subscription) are deleted

Every verdict says what to fix. Settings: `terraform output -json` (--terraform-outputs), flags
and the environment, as every tally command (tally_cli/config.py).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tally_cli.clients import Clients
from tally_cli.config import Settings
from tally_cli.errors import ConfigError, StepFailed, TallyError

__all__ = [
    "ANNOUNCING",
    "CHECK_OUTPUTS",
    "CHECK_SPEC",
    "CHECK_VERSION",
    "CHECK_WORKFLOW",
    "TABLE_ID",
    "TERRAFORM_OUTPUTS",
    "Check",
    "Step",
    "Target",
    "apply_terraform_outputs",
    "new_run_id",
]

CHECK_WORKFLOW = "tally-check"  # terraform/pubsub.tf filters the check subscription on it
CHECK_VERSION = "1.0.0"
CHECK_OUTPUTS = ("result.txt", "logs/check.log")
CHECK_SPEC = {
    "workflow": CHECK_WORKFLOW,
    "version": CHECK_VERSION,
    "description": "Reserved for `tally check`: a two-output run that proves a deployment.",
    "expected_outputs": [
        {"path": CHECK_OUTPUTS[0], "description": "The check's result."},
        {"path": CHECK_OUTPUTS[1], "description": "The check's log."},
    ],
}
TABLE_ID = re.compile(r"[A-Za-z0-9_.:-]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_$]+")
# Outcomes of the delivery that announces a run (tally_handler.outcomes.Outcome).
ANNOUNCING = {"completed", "reconciled", "revised"}

# `terraform output -json` name -> setting.
TERRAFORM_OUTPUTS = {
    "registry_url": "registry_url",
    "outputs_bucket_name": "outputs_bucket",
    "run_completions_topic_id": "completions_topic",
    "check_subscription_id": "check_subscription",
    "events_table_id": "events_table",
    "runs_table_id": "runs_table",
}


@dataclass
class Step:
    name: str
    title: str
    status: str = "pending"  # ok | failed | skipped
    detail: str = ""
    fix: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def new_run_id() -> str:
    return f"check-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class Target:
    """What the check runs against, resolved from the settings and Terraform's outputs."""

    settings: Settings
    events_table: str
    runs_table: str
    check_subscription: str | None
    wait: float
    keep: bool
    run_id: str = field(default_factory=new_run_id)

    def __post_init__(self) -> None:
        for table in (self.events_table, self.runs_table):
            if not TABLE_ID.fullmatch(table):
                raise ConfigError(f"{table!r} is not a table id: use project.dataset.table")

    @property
    def prefix(self) -> str:
        layout = self.settings.layout
        folder = layout.split("{path}")[0]
        return folder.format(workflow=CHECK_WORKFLOW, version=CHECK_VERSION, run_id=self.run_id)


def apply_terraform_outputs(settings: Settings, text: str, where: str) -> dict[str, str]:
    """Settings from `terraform output -json`; returns the check's own (tables, subscription)."""
    try:
        outputs = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where} is not `terraform output -json` output: {exc}") from None
    if not isinstance(outputs, dict) or "registry_url" not in outputs:
        raise ConfigError(
            f"{where} has no registry_url: pipe `terraform output -json` from the tally "
            "Terraform directory (after terraform apply)"
        )
    extra: dict[str, str] = {}
    for name, setting in TERRAFORM_OUTPUTS.items():
        value = (outputs.get(name) or {}).get("value")
        if not value:
            continue
        if hasattr(settings, setting):
            setattr(settings, setting, value)
            settings.sources[setting] = f"terraform output {name}"
        else:
            extra[setting] = value
    dataset = (outputs.get("bigquery_dataset_id") or {}).get("value")
    if dataset and "." in dataset:
        settings.project, settings.dataset = dataset.split(".", 1)
        settings.sources["project"] = settings.sources["dataset"] = "terraform output"
    if settings.registry_url:
        settings.registry_url = settings.registry_url.rstrip("/")
    return extra


class Check:
    def __init__(
        self, clients: Clients, target: Target, report: Callable[[Step], None] | None = None
    ) -> None:
        self.clients = clients
        self.target = target
        self.settings = target.settings
        self.report = report or (lambda step: None)
        self.steps = [
            Step("registry", "the registry answers"),
            Step("register", f"workflow {CHECK_WORKFLOW} {CHECK_VERSION} is registered"),
            Step("refuse-unauth", "the registry refuses a write without a token"),
            Step("subscription", "a subscription receives the run completions"),
            Step("write-run", "the check run is written to the outputs bucket"),
            Step("announcement", "the run is announced once, COMPLETE"),
            Step("manifest", "the manifest lists the run's outputs"),
            Step("event-log", "the event log has the run's deliveries"),
            Step("runs-row", "the runs table has the run"),
            Step("cleanup", "the objects the check wrote are deleted"),
        ]
        self.needs = {
            "register": {"registry"},
            "write-run": {"register", "subscription"},
            "announcement": {"write-run"},
            "manifest": {"announcement"},
            "event-log": {"write-run"},
            "runs-row": {"announcement"},
        }
        self.subscription: str | None = None
        self.temporary_subscription = False
        self.message: Any = None

    # -- running -------------------------------------------------------------------------------

    def run(self) -> list[Step]:
        actions = {
            "registry": self.registry_answers,
            "register": self.register,
            "refuse-unauth": self.refuse_unauthenticated,
            "subscription": self.make_subscription,
            "write-run": self.write_run,
            "announcement": self.announcement,
            "manifest": self.manifest,
            "event-log": self.event_log,
            "runs-row": self.runs_row,
            "cleanup": self.cleanup,
        }
        status = {}
        for step in self.steps:
            missing = [n for n in self.needs.get(step.name, ()) if status.get(n) != "ok"]
            if missing:
                step.status = "skipped"
                step.detail = f"needs {', '.join(sorted(missing))}"
            else:
                started = time.monotonic()
                try:
                    step.detail = actions[step.name]() or ""
                    step.status = "ok"
                except StepFailed as exc:
                    step.status, step.detail, step.fix = "failed", exc.detail, exc.fix
                except TallyError as exc:
                    step.status, step.detail = "failed", str(exc)
                    step.fix = "see the error: it names the dependency and the setting"
                step.seconds = round(time.monotonic() - started, 2)
            status[step.name] = step.status
            self.report(step)
        return self.steps

    @property
    def passed(self) -> bool:
        return all(s.status == "ok" for s in self.steps)

    # -- the steps -----------------------------------------------------------------------------

    def _registry(self) -> Any:
        from tally_cli.registry import Registry

        return Registry(self.settings)

    def registry_answers(self) -> str:
        resp = self._registry()._request("GET", "/workflows")
        if resp.status_code != 200:
            raise StepFailed(
                f"GET /workflows answered {resp.status_code}",
                "check the registry URL (terraform output registry_url) and its logs",
            )
        return f"{len(resp.json().get('workflows', []))} workflows at {self.settings.registry_url}"

    def _spec_path(self, version: str) -> str:
        return f"/workflows/{quote(CHECK_WORKFLOW, safe='')}/versions/{quote(version, safe='')}"

    def register(self) -> str:
        body = json.dumps(CHECK_SPEC).encode()
        try:
            resp = self._registry()._request("PUT", self._spec_path(CHECK_VERSION), body)
        except TallyError as exc:
            raise StepFailed(
                str(exc),
                "add your account's email to registry.writers (Terraform; TALLY_REGISTRY_WRITERS)"
                " and apply, or pass --token with a writer's ID token",
            ) from None
        if resp.status_code in (200, 201):
            return "created" if resp.status_code == 201 else "already registered, unchanged"
        if resp.status_code == 409:
            raise StepFailed(
                f"a different {CHECK_WORKFLOW} {CHECK_VERSION} is registered",
                f"the workflow name {CHECK_WORKFLOW} is reserved for tally check: remove that "
                "spec from the registry bucket (workflows/tally-check/)",
            )
        raise StepFailed(
            f"PUT answered {resp.status_code}: {resp.text[:300]}",
            "read the registry's logs; this spec is valid, so the registry misbehaves",
        )

    def refuse_unauthenticated(self) -> str:
        import requests

        url = self.settings.registry_url + self._spec_path("0.0.0-unauthenticated")
        try:
            resp = requests.put(
                url,
                data=json.dumps({**CHECK_SPEC, "version": "0.0.0-unauthenticated"}),
                headers={"Content-Type": "application/json"},
                timeout=self.settings.timeout,
            )
        except requests.RequestException as exc:
            raise StepFailed(f"PUT {url} failed: {exc}", "is the registry up?") from None
        if resp.status_code in (401, 403):
            return f"refused with {resp.status_code}"
        raise StepFailed(
            f"a write without a token answered {resp.status_code}",
            "anyone can register specs: check TALLY_REGISTRY_WRITERS and the registry's ingress"
            " and IAM (only registry.invokers may call it)",
        )

    def make_subscription(self) -> str:
        from google.api_core import exceptions as api

        from tally_cli.clients import dependency

        subscriber = self.clients.subscriber()
        if self.target.check_subscription:
            name = self.settings.subscription_path(self.target.check_subscription)
            try:
                with dependency(self.settings, "Pub/Sub"):
                    subscriber.get_subscription(
                        request={"subscription": name}, timeout=self.settings.timeout
                    )
            except TallyError as exc:
                raise StepFailed(
                    str(exc),
                    "terraform apply with check_subscription = true creates it "
                    "(terraform output check_subscription_id)",
                ) from None
            self.subscription = name
            return name
        name = self.settings.subscription_path(f"tally-check-{uuid.uuid4().hex[:12]}")
        topic = self.settings.topic_path(self.settings.completions_topic)
        try:
            with dependency(self.settings, "Pub/Sub"):
                subscriber.create_subscription(
                    request={"name": name, "topic": topic, "ack_deadline_seconds": 60},
                    timeout=self.settings.timeout,
                )
        except api.NotFound:
            raise StepFailed(
                f"the completions topic {topic} does not exist",
                "check the project and TALLY_COMPLETIONS_TOPIC (terraform output "
                "run_completions_topic_id)",
            ) from None
        self.subscription, self.temporary_subscription = name, True
        return f"temporary {name}"

    def write_run(self) -> str:
        from tally_cli.clients import dependency

        bucket = self.clients.storage().bucket(self.settings.require("outputs_bucket"))
        with dependency(self.settings, "Storage"):
            for path in CHECK_OUTPUTS:
                blob = bucket.blob(self.target.prefix + path)
                blob.upload_from_string(f"tally check {self.target.run_id}\n".encode())
        return f"gs://{bucket.name}/{self.target.prefix} ({len(CHECK_OUTPUTS)} outputs)"

    def _ours(self, message: Any) -> bool:
        attributes = message.attributes
        return (
            attributes.get("workflow") == CHECK_WORKFLOW
            and attributes.get("run_id") == self.target.run_id
        )

    def announcement(self) -> str:
        from tally_cli.clients import dependency

        subscriber = self.clients.subscriber()
        deadline = time.monotonic() + self.target.wait
        found: list[Any] = []
        while time.monotonic() < deadline and not found:
            with dependency(self.settings, "Pub/Sub"):
                response = subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": 50},
                    timeout=min(10.0, max(1.0, deadline - time.monotonic())),
                    retry=None,
                )
            ours = [m for m in response.received_messages if self._ours(m.message)]
            others = [m for m in response.received_messages if not self._ours(m.message)]
            if ours:
                subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": [m.ack_id for m in ours]}
                )
            if others and not self.temporary_subscription:  # other checks' messages: release
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [m.ack_id for m in others],
                        "ack_deadline_seconds": 0,
                    }
                )
            elif others:
                subscriber.acknowledge(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [m.ack_id for m in others],
                    }
                )
            found += [m.message for m in ours]
            if not response.received_messages:
                time.sleep(0.2)  # an emulator answers an empty pull at once
        if not found:
            raise StepFailed(*self._diagnose_silence())
        self.message = found[0]
        state = self.message.attributes.get("state")
        if state != "COMPLETE":
            raise StepFailed(
                f"announced with state {state!r}, not COMPLETE",
                "tally check writes every expected output: read the run's event log rows "
                f"(tally query run_history -p run_id={self.target.run_id})",
            )
        key = self.message.attributes.get("idempotency_key", "")
        return f"COMPLETE, idempotency key {key}"

    def _diagnose_silence(self) -> tuple[str, str]:
        """Why no announcement came: what the event log says about the run."""
        waited = f"no completion message for {self.target.prefix} within {self.target.wait:.0f} s"
        try:
            rows = self._rows()
        except TallyError as exc:
            return (
                f"{waited}; the event log could not be read either ({exc})",
                "fix BigQuery first (the event-log step names the table)",
            )
        if not rows:
            return (
                f"{waited}, and the event handler logged no delivery of the run",
                "the event handler is down or never called: check its logs and that it is "
                "deployed, the bucket notification and the push subscription (terraform apply),"
                " and the dead letters (tally replay --dry-run)",
            )
        outcomes = sorted({f"{r['outcome']}: {r.get('detail') or ''}"[:200] for r in rows})
        return (
            f"{waited}; the event handler logged {len(rows)} deliveries: {'; '.join(outcomes)}",
            "the logged outcomes say what failed (deferred: a dependency; unknown-workflow: "
            "the registry the handler reads is not the one registered to)",
        )

    def manifest(self) -> str:
        from tally_cli.clients import dependency

        bucket = self.clients.storage().bucket(self.settings.require("outputs_bucket"))
        name = self.target.prefix + self.settings.manifest_name
        with dependency(self.settings, "Storage"):
            blob = bucket.get_blob(name)
            data = blob.download_as_bytes() if blob is not None else None
        if data is None:
            raise StepFailed(
                f"no manifest gs://{bucket.name}/{name}",
                "the handler announced without writing it: check TALLY_MANIFEST_NAME "
                "(--manifest-name) and the handler's write access to the bucket",
            )
        try:
            text = json.dumps(json.loads(data))
        except ValueError:
            raise StepFailed(f"{name} is not JSON", "read it: tally writes JSON") from None
        missing = [p for p in CHECK_OUTPUTS if p not in text]
        if missing:
            raise StepFailed(f"the manifest lacks {missing}", "compare it with the bucket")
        return f"gs://{bucket.name}/{name} lists {len(CHECK_OUTPUTS)} outputs"

    def _rows(self) -> list[dict[str, Any]]:
        from tally_cli.eventlog import EventLog

        sql = (
            f"SELECT output_path, outcome, detail FROM `{self.target.events_table}` "  # noqa: S608
            "WHERE workflow = @workflow AND run_id = @run_id"
        )
        return EventLog(self.clients).run(
            sql, {"workflow": CHECK_WORKFLOW, "run_id": self.target.run_id}
        )

    def _poll(self, check: Callable[[], Any], seconds: float) -> Any:
        """Streaming inserts show up within seconds: poll with a deadline."""
        deadline = time.monotonic() + seconds
        while True:
            value = check()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(1.0)

    def _table_failure(self, table: str, exc: TallyError) -> StepFailed:
        return StepFailed(
            f"{table}: {exc}",
            f"terraform apply creates {table} (a deleted table is not recreated by the handler);"
            " or the Terraform outputs come from another deployment",
        )

    def event_log(self) -> str:
        table = self.target.events_table

        def complete() -> list[dict[str, Any]] | None:
            rows = self._rows()
            paths = {r["output_path"] for r in rows}
            announced = any(r["outcome"] in ANNOUNCING for r in rows)
            return rows if set(CHECK_OUTPUTS) <= paths and announced else None

        try:
            rows = self._poll(complete, min(60.0, self.target.wait))
            if rows is None:
                rows = self._rows()
        except TallyError as exc:
            raise self._table_failure(table, exc) from None
        paths = {r["output_path"] for r in rows}
        if not set(CHECK_OUTPUTS) <= paths or not any(r["outcome"] in ANNOUNCING for r in rows):
            raise StepFailed(
                f"{table} has {len(rows)} rows for the run: outcomes "
                f"{sorted({r['outcome'] for r in rows})}, outputs {sorted(p for p in paths if p)}",
                "the handler could not write its event rows: check its BigQuery grant "
                "(roles/bigquery.dataEditor on the table) and its logs",
            )
        return f"{len(rows)} rows in {table}"

    def runs_row(self) -> str:
        from tally_cli.eventlog import EventLog

        table = self.target.runs_table
        where = "WHERE workflow = @workflow AND run_id = @run_id"
        sql = f"SELECT COUNT(*) AS n FROM `{table}` {where}"  # noqa: S608 (checked table id)
        params = {"workflow": CHECK_WORKFLOW, "run_id": self.target.run_id}
        try:
            count = self._poll(
                lambda: EventLog(self.clients).run(sql, params)[0]["n"], min(60.0, self.target.wait)
            )
        except TallyError as exc:
            raise self._table_failure(table, exc) from None
        if count != 1:
            raise StepFailed(
                f"{table} has {count} rows for the run, not 1",
                "the handler writes the runs row before it marks the manifest published: "
                "read its logs",
            )
        return f"1 row in {table}"

    def cleanup(self) -> str:
        from tally_cli.clients import dependency

        done = []
        if self.temporary_subscription and self.subscription:
            with dependency(self.settings, "Pub/Sub"):
                self.clients.subscriber().delete_subscription(
                    request={"subscription": self.subscription}, timeout=self.settings.timeout
                )
            done.append("temporary subscription deleted")
        if self.target.keep:
            return "; ".join([*done, f"--keep: {self.target.prefix} left in place"])
        bucket = self.clients.storage().bucket(self.settings.require("outputs_bucket"))
        with dependency(self.settings, "Storage"):
            blobs = list(bucket.list_blobs(prefix=self.target.prefix))
            for blob in blobs:
                blob.delete()
        done.append(f"{len(blobs)} objects deleted (the event log rows stay)")
        return "; ".join(done)
