"""A run's status: the bucket listing against the registry's spec, the manifest, the event log.

State (the run lifecycle, docs/design.md "Announcing a run"), from the bucket first:
  ANNOUNCING         the announcement record is claimed, not yet marked (claimant and age shown);
  COMPLETE / FAILED  the latest revision is published with that state and the bucket matches it;
  CHANGED            announced, then an expected or optional output changed: not re-announced yet;
  BLOCKED            not announced, and an object that is not tally's manifest sits at its name;
  STALLED            not announced and past the spec's deadline_minutes since its first output
                     (or reconciliation logged it stalled);
  RUNNING            outputs exist, or the event log has rows, and none of the above.
The spec and layout code are the event handler's own (functions/event_handler/tally_handler), so
the CLI judges "present" and "missing" exactly as the handler does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tally_cli.clients import Clients, dependency
from tally_cli.errors import CheckFailed, ConfigError
from tally_cli.eventlog import EventLog, plain
from tally_cli.registry import Registry

__all__ = [
    "RunStatus",
    "changes_since",
    "expected_outputs",
    "handler_code",
    "parse_run",
    "state_of",
]


def handler_code() -> None:
    """The event handler's package (tally-handler) is a dependency: say how to get it."""
    try:
        import tally_handler  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "the event handler's package (tally-handler) is not installed: pip install"
            " ./functions/event_handler from a checkout of tally"
        ) from None


def parse_run(text: str) -> tuple[str, str, str]:
    parts = text.strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"expected WORKFLOW/VERSION/RUN_ID (three non-empty parts), got {text!r}")
    return parts[0], parts[1], parts[2]


def expected_outputs(
    spec: Any, present: dict[str, dict[str, Any]], manifest_name: str, failure_marker: str
) -> tuple[list, list, list]:
    """(expected with their state, missing required ones, unexpected paths), from the handler's
    own assessment (completeness.assess); each present item gets the expected output it meets."""
    from tally_handler.completeness import Entry, assess

    entries = [Entry(path, item["generation"]) for path, item in present.items()]
    found = assess(spec, entries, manifest_name, failure_marker)
    for item in present.values():
        item["expected"] = None
    for output in found.outputs:
        present[output.entry.path]["expected"] = dict(output.expected.label)
    listed = {output.entry.path for output in found.outputs}
    expected: list[dict[str, Any]] = [
        {"path": exact.path, "required": exact.required, "present": exact.path in listed}
        for exact in spec.exact
    ]
    expected += [
        {
            "pattern": count.expected.pattern,
            "count": count.expected.count,
            "found": count.found,
            "required": count.expected.required,
            "present": count.satisfied,
        }
        for count in found.patterns
    ]
    missing: list[dict[str, Any]] = [{"path": path} for path in found.missing_paths]
    missing += [
        {"pattern": unmet.expected.pattern, "count": unmet.expected.count, "found": unmet.found}
        for unmet in found.unmet_patterns
    ]
    return expected, missing, [entry.path for entry in found.unexpected]


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

    def _download(self, bucket: str, name: str) -> tuple[bytes, int] | None:
        with dependency(self.settings, "Storage"):
            blob = (
                self.clients.storage()
                .bucket(bucket)
                .get_blob(name, retry=self.clients.retry(), timeout=self.settings.timeout)
            )
            if blob is None:
                return None
            data = blob.download_as_bytes(retry=self.clients.retry(), timeout=self.settings.timeout)
        return data, int(blob.generation)

    def announcement(self, bucket: str, run: Any) -> dict[str, Any] | None:
        """The announcement record, as people read it (None before any claim)."""
        from tally_handler.errors import NotTallys
        from tally_handler.manifest import RECORD_NAME, Record, outputs_from_object

        found = self._download(bucket, run.prefix + RECORD_NAME)
        if found is None:
            return None
        try:
            record = Record.from_bytes(found[0])
            manifest = record.manifest_of(run)
        except NotTallys as exc:
            return {"error": str(exc)}
        outputs = manifest.outputs
        if manifest.outputs_object:
            split = self._download(bucket, run.prefix + manifest.outputs_object)
            outputs = outputs_from_object(split[0]) if split else ()
        claimed_time = datetime.fromisoformat(record.claim.claimed_time.replace("Z", "+00:00"))
        return {
            "revision": record.revision,
            "claim_status": record.claim_status.value,
            "state": manifest.state.value,
            "idempotency_key": manifest.idempotency_key,
            "claimant": record.claim.claimant,
            "claimed_time": record.claim.claimed_time,
            "claim_age_seconds": round((datetime.now(UTC) - claimed_time).total_seconds(), 1),
            "published_time": record.published_time,
            "outputs_count": manifest.outputs_count,
            "unexpected_count": manifest.unexpected_count,
            "failure_reason": manifest.failure_reason,
            "generations": {item["path"]: item["generation"] for item in outputs},
            "earlier_revisions": [
                {"revision": p.revision, "idempotency_key": p.idempotency_key}
                for p in record.history
            ],
            "manifest_bytes": record.manifest,
        }

    def manifest(self, bucket: str, run: Any, announced: dict[str, Any] | None) -> dict[str, Any]:
        """What sits at the manifest's name: tally's copy of the latest revision, or not."""
        from tally_handler.errors import NotTallys
        from tally_handler.manifest import Manifest

        found = self._download(bucket, run.prefix + self.settings.manifest_name)
        if found is None:
            return {"present": False}
        data, generation = found
        if announced and data == announced.get("manifest_bytes"):
            return {"present": True, "generation": generation, "matches_record": True}
        try:
            Manifest.from_bytes(data, run)
        except NotTallys as exc:
            return {"present": True, "generation": generation, "foreign": str(exc)}
        return {"present": True, "generation": generation, "matches_record": False}

    def collect(
        self, run: str, progress: Callable[[int], None] = lambda _n: None
    ) -> dict[str, Any]:
        handler_code()
        from tally_handler.errors import SpecError
        from tally_handler.layout import Layout, OutputKind, classify
        from tally_handler.spec import Spec

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
        expected, missing, unexpected = (
            expected_outputs(
                spec, present, self.settings.manifest_name, self.settings.failure_marker
            )
            if spec
            else ([], [], [])
        )
        run_key = layout.run(bucket, layout.match(prefix + "x"))  # type: ignore[arg-type]
        announced = self.announcement(bucket, run_key)
        manifest = self.manifest(bucket, run_key, announced)
        changed = changes_since(announced, present, failure_marker)
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
        state = state_of(announced, manifest, changed, summary, overdue)
        if announced:
            announced.pop("manifest_bytes", None)
            announced.pop("generations", None)
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
            "announcement": announced,
            "changes": changed,
            "manifest": manifest,
            "event_log": summary,
            "history": history,
        }


def changes_since(
    announced: dict[str, Any] | None, present: dict[str, dict[str, Any]], failure_marker: bool
) -> list[str]:
    """How the bucket differs from the latest published revision (empty: it matches)."""
    if not announced or "generations" not in announced:
        return []
    before = announced["generations"]
    now = {path: item["generation"] for path, item in present.items() if item.get("expected")}
    changes = [
        f"{path}: rewritten" for path in sorted(before) if path in now and now[path] != before[path]
    ]
    changes += [f"{path}: deleted" for path in sorted(before) if path not in now]
    changes += [f"{path}: added" for path in sorted(now) if path not in before]
    if announced.get("state") == "FAILED":
        return [] if failure_marker else ["the failure marker was removed"]
    if failure_marker:
        changes.append("a failure marker appeared")
    return changes


def state_of(
    announced: dict[str, Any] | None,
    manifest: dict[str, Any],
    changed: list[str],
    summary: dict[str, Any] | None,
    overdue: bool,
) -> str:
    if announced and "claim_status" in announced:
        if announced["claim_status"] == "claimed":
            return "ANNOUNCING"
        return "CHANGED" if changed else str(announced["state"])
    if manifest.get("foreign"):
        return "BLOCKED"
    logged = (summary or {}).get("state")
    if logged in ("COMPLETE", "FAILED", "STALLED", "BLOCKED"):
        return str(logged)
    return "STALLED" if overdue else "RUNNING"
