"""A run's status: the bucket listing against the registry's spec, the manifest, the event log.

State (the run lifecycle):
  COMPLETE / FAILED  the manifest is published with that state (else the run_status view says so);
  STALLED            not announced and past the spec's deadline_minutes since its first output
                     (or reconciliation logged it stalled);
  RUNNING            outputs exist, or the event log has rows, and none of the above.
The spec and layout code are the event handler's own (functions/event_handler/tally_handler), so
the CLI judges "present" and "missing" exactly as the handler does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tally_cli.clients import Clients, dependency
from tally_cli.config import CHECKOUT
from tally_cli.errors import CheckFailed, ConfigError
from tally_cli.eventlog import EventLog, plain
from tally_cli.registry import Registry

HANDLER_SOURCE = CHECKOUT / "functions" / "event_handler"


def handler_code() -> None:
    """Make the event handler's package importable (the CLI runs from a checkout)."""
    if not (HANDLER_SOURCE / "tally_handler").is_dir():
        raise ConfigError(
            f"the event handler's code is not at {HANDLER_SOURCE}: run tally from a checkout "
            "(pip install -e .)"
        )
    if str(HANDLER_SOURCE) not in sys.path:
        sys.path.insert(0, str(HANDLER_SOURCE))


def parse_run(text: str) -> tuple[str, str, str]:
    parts = text.strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"expected WORKFLOW/VERSION/RUN_ID (three non-empty parts), got {text!r}")
    return parts[0], parts[1], parts[2]


def _expected_outputs(spec: Any, present: dict[str, dict[str, Any]]) -> tuple[list, list, list]:
    """(expected with their state, missing required ones, unexpected paths)."""
    pattern_found: dict[str, int] = {p.pattern: 0 for p in spec.patterns}
    unexpected = []
    for path, item in present.items():
        match = spec.expects(path)
        if match is None:
            item["expected"] = None
            unexpected.append(path)
        elif hasattr(match, "pattern"):
            item["expected"] = {"pattern": match.pattern}
            pattern_found[match.pattern] += 1
        else:
            item["expected"] = {"path": match.path}
    expected, missing = [], []
    for exact in spec.exact:
        entry = {"path": exact.path, "required": exact.required, "present": exact.path in present}
        expected.append(entry)
        if exact.required and not entry["present"]:
            missing.append({"path": exact.path})
    for pattern in spec.patterns:
        found = pattern_found[pattern.pattern]
        entry = {
            "pattern": pattern.pattern,
            "count": pattern.count,
            "found": found,
            "required": pattern.required,
            "present": found == pattern.count,
        }
        expected.append(entry)
        if pattern.required and found != pattern.count:
            missing.append({"pattern": pattern.pattern, "count": pattern.count, "found": found})
    return expected, missing, unexpected


class RunStatus:
    def __init__(self, clients: Clients, registry: Registry | None) -> None:
        self.clients = clients
        self.settings = clients.settings
        self.registry = registry
        self.events = EventLog(clients)

    def listing(
        self, bucket: str, prefix: str, progress: Callable[[int], None]
    ) -> list[dict[str, Any]]:
        objects = []
        with dependency(self.settings, "Storage"):
            blobs = self.clients.storage().list_blobs(
                bucket, prefix=prefix, retry=self.clients.retry(), timeout=self.settings.timeout
            )
            for page in blobs.pages:
                for blob in page:
                    objects.append(
                        {
                            "path": blob.name[len(prefix) :],
                            "size": blob.size,
                            "generation": blob.generation,
                            "time_created": plain(blob.time_created),
                        }
                    )
                progress(len(objects))
        return objects

    def manifest(self, bucket: str, name: str) -> dict[str, Any] | None:
        with dependency(self.settings, "Storage"):
            blob = (
                self.clients.storage()
                .bucket(bucket)
                .get_blob(name, retry=self.clients.retry(), timeout=self.settings.timeout)
            )
            if blob is None:
                return None
            data = blob.download_as_bytes(retry=self.clients.retry(), timeout=self.settings.timeout)
        try:
            doc = json.loads(data)
        except ValueError:
            return {"generation": blob.generation, "error": "not JSON: not a tally manifest"}
        if not isinstance(doc, dict):
            return {"generation": blob.generation, "error": "not a tally manifest"}
        keep = (
            "status",
            "state",
            "outputs_count",
            "unexpected_count",
            "failure_reason",
            "idempotency_key",
            "first_output_time",
            "published_at",
        )
        return {"generation": blob.generation, **{k: doc.get(k) for k in keep}}

    def collect(
        self, run: str, progress: Callable[[int], None] = lambda _n: None
    ) -> dict[str, Any]:
        handler_code()
        from tally_handler.layout import Layout, OutputKind, classify
        from tally_handler.spec import Spec, SpecError

        workflow, version, run_id = parse_run(run)
        bucket = self.settings.require("outputs_bucket")
        try:
            layout = Layout.parse(self.settings.layout)
            prefix = layout.run_prefix(workflow, version, run_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

        spec_doc = self.registry.spec(workflow, version) if self.registry else None
        spec, spec_problem = None, None
        if self.registry is None:
            spec_problem = "no registry configured: set TALLY_REGISTRY_URL to compare with the spec"
        elif spec_doc is None:
            spec_problem = f"the registry does not know {workflow} {version}"
        else:
            try:
                spec = Spec.from_json(spec_doc)
            except SpecError as exc:
                spec_problem = f"the registry's spec is unusable: {exc}"

        objects = self.listing(bucket, prefix, progress)
        present: dict[str, dict[str, Any]] = {}
        tally_objects, failure_marker = [], False
        for item in objects:
            kind = classify(item["path"], self.settings.manifest_name, self.settings.failure_marker)
            if kind is OutputKind.OUTPUT:
                present[item["path"]] = item
            elif kind is OutputKind.FAILURE_MARKER:
                failure_marker = True
            else:
                tally_objects.append(item["path"])
        expected, missing, unexpected = _expected_outputs(spec, present) if spec else ([], [], [])
        manifest = (
            self.manifest(bucket, prefix + self.settings.manifest_name)
            if self.settings.manifest_name in tally_objects
            else None
        )
        summary = self.events.run_status(workflow, version, run_id)
        history = self.events.history(workflow, version, run_id)
        if not objects and summary is None and not history:
            raise CheckFailed(
                f"run {workflow}/{version}/{run_id} not found: no object under "
                f"gs://{bucket}/{prefix} and no row in the event log"
            )

        first_output = min(
            (o["time_created"] for o in present.values() if o["time_created"]), default=None
        )
        deadline = spec.deadline_minutes if spec else None
        overdue = bool(
            deadline
            and first_output
            and datetime.now(UTC)
            > datetime.fromisoformat(first_output.replace("Z", "+00:00"))
            + timedelta(minutes=deadline)
        )
        state = _state(manifest, summary, overdue)
        return {
            "run": f"{workflow}/{version}/{run_id}",
            "workflow": workflow,
            "version": version,
            "run_id": run_id,
            "state": state,
            "bucket": bucket,
            "prefix": prefix,
            "spec": None
            if spec is None
            else {
                "workflow": spec.workflow,
                "version": spec.version,
                "deadline_minutes": spec.deadline_minutes,
            },
            "spec_problem": spec_problem,
            "first_output_time": first_output,
            "past_deadline": overdue,
            "failure_marker": failure_marker,
            "outputs": {
                "present": list(present.values()),
                "expected": expected,
                "missing": missing,
                "unexpected": unexpected,
                "tally_objects": tally_objects,
            },
            "manifest": manifest,
            "event_log": summary,
            "history": history,
        }


def _state(manifest: dict[str, Any] | None, summary: dict[str, Any] | None, overdue: bool) -> str:
    if manifest and manifest.get("status") == "published" and manifest.get("state"):
        return str(manifest["state"])
    logged = (summary or {}).get("state")
    if logged in ("COMPLETE", "FAILED", "STALLED"):
        return str(logged)
    return "STALLED" if overdue else "RUNNING"
