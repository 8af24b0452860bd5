"""The manifest: ``output.json`` in the run folder, the run's outputs, written once by the claim.

Life of a manifest: the delivery that finds the run complete (or failed) creates it with
``ifGenerationMatch=0`` and status ``claimed``; it publishes the completion message (body = the
manifest, attributes = ``completion_attributes``); it rewrites the manifest with status
``published`` (``ifGenerationMatch`` = the claim's generation). ``state`` is the run's verdict,
COMPLETE or FAILED: the ``status`` attribute of the completion message and the runs table.

The bytes are canonical (sorted keys, compact, UTF-8), so equal manifests are equal bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tally_handler.completeness import Entry, Output
from tally_handler.delivery import rfc3339
from tally_handler.layout import TALLY_FOLDER, RunKey

MANIFEST_KIND = "tally#manifest"
MANIFEST_FORMAT = 1
# Far below google-cloud-storage's 8 MiB multipart limit: the claim stays one request, never a
# resumable upload (the local Storage ignores ifGenerationMatch on those).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class State(StrEnum):
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class Status(StrEnum):
    CLAIMED = "claimed"
    PUBLISHED = "published"


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: str
    claimant: str  # who claimed: instance and revision, for people reading a stuck claim
    claimed_at: str | datetime

    def to_json(self) -> dict[str, str]:
        return {
            "delivery_id": self.delivery_id,
            "claimant": self.claimant,
            "claimed_at": rfc3339(self.claimed_at),
        }


_TEXT_KEYS = ("run_key", "bucket", "workflow", "version", "run_id", "idempotency_key")
_REQUIRED_KEYS = (
    "run_key",
    "bucket",
    "workflow",
    "version",
    "run_id",
    "idempotency_key",
    "state",
    "status",
    "claim",
    "outputs_count",
)


def build_manifest(
    run_key: RunKey,
    *,
    state: State | str,
    status: Status | str,
    outputs: Sequence[Output],
    unexpected: Sequence[Entry],
    failure_reason: str | None,
    claim: Claim,
    handler_version: str,
    published_at: str | datetime | None = None,
) -> dict[str, Any]:
    output_items = [_output(output) for output in outputs]
    unexpected_items = [_object(entry) for entry in unexpected]
    return {
        "kind": MANIFEST_KIND,
        "format": MANIFEST_FORMAT,
        "run_key": run_key.key,
        "bucket": run_key.bucket,
        "workflow": run_key.workflow,
        "version": run_key.version,
        "run_id": run_key.run_id,
        "run_prefix": run_key.prefix,
        "idempotency_key": run_key.idempotency_key,
        "state": State(state).value,
        "status": Status(status).value,
        "failure_reason": failure_reason,
        "outputs": output_items,
        "outputs_count": len(output_items),
        "unexpected": unexpected_items,
        "unexpected_count": len(unexpected_items),
        "outputs_object": None,
        "first_output_time": first_output_time([o.entry for o in outputs], unexpected),
        "claim": claim.to_json(),
        "handler_version": handler_version,
        "published_at": None if published_at is None else rfc3339(published_at),
    }


def _object(entry: Entry) -> dict[str, Any]:
    return {
        "path": entry.path,
        "generation": entry.generation,
        "size": entry.size,
        "crc32c": entry.crc32c,
        "md5": entry.md5,
        "content_type": entry.content_type,
        "time_created": _time(entry.time_created),
        "updated": _time(entry.updated),
    }


def _output(output: Output) -> dict[str, Any]:
    return {**_object(output.entry), "expected": dict(output.expected.label)}


def _time(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return rfc3339(value)
    except ValueError:
        return value  # informative only: an odd listing time must not block the announcement


def first_output_time(outputs: Sequence[Entry], unexpected: Sequence[Entry] = ()) -> str | None:
    """Creation time of the run's earliest object (the runs table's first_event_time)."""
    times = []
    for entry in (*outputs, *unexpected):
        try:
            times.append(rfc3339(entry.time_created))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            continue  # unknown or unreadable: the runs table's column must stay a TIMESTAMP
    return min(times, default=None)


def to_bytes(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Read a manifest back; ValueError says why the object is not one tally wrote."""
    hint = "tally owns this name in every run folder: move the object elsewhere"
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise ValueError(
            f"the object is not a tally manifest (not JSON: {error}); {hint}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise ValueError(f"the object is not a tally manifest (no kind {MANIFEST_KIND!r}); {hint}")
    absent = [key for key in _REQUIRED_KEYS if key not in manifest]
    if absent:
        raise ValueError(f"the tally manifest lacks {', '.join(absent)}; {hint}")
    mistyped = [key for key in _TEXT_KEYS if not isinstance(manifest[key], str)]
    if mistyped:
        raise ValueError(f"the tally manifest's {', '.join(mistyped)} must be strings; {hint}")
    state, status = manifest["state"], manifest["status"]
    if not (isinstance(state, str) and state in set(State)) or not (
        isinstance(status, str) and status in set(Status)
    ):
        raise ValueError(
            f"the tally manifest has state {manifest['state']!r} and status "
            f"{manifest['status']!r}; expected {'/'.join(State)} and {'/'.join(Status)}"
        )
    claim = manifest["claim"]
    if not isinstance(claim, dict) or not isinstance(claim.get("delivery_id"), str):
        raise ValueError(f"the tally manifest's claim has no delivery_id; {hint}")
    try:
        rfc3339(claim.get("claimed_at"))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"the tally manifest's claim has no valid claimed_at; {hint}") from None
    return manifest


def mark_published(manifest: Mapping[str, Any], at: str | datetime) -> dict[str, Any]:
    return {**manifest, "status": Status.PUBLISHED.value, "published_at": rfc3339(at)}


def claim_is_stale(manifest: Mapping[str, Any], now: datetime, lease_seconds: float) -> bool:
    """A claim whose claimant never published within the lease may be taken over.

    ``manifest`` comes from ``parse_manifest``; ``now`` is an aware datetime."""
    if manifest["status"] != Status.CLAIMED:
        return False
    claimed_at = datetime.fromisoformat(rfc3339(manifest["claim"]["claimed_at"]))
    return (now - claimed_at).total_seconds() > lease_seconds


def completion_attributes(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The completion message's attributes (docs/design.md, "Completion message")."""
    return {
        "workflow": manifest["workflow"],
        "version": manifest["version"],
        "run_id": manifest["run_id"],
        "status": manifest["state"],
        "idempotency_key": manifest["idempotency_key"],
        "bucket": manifest["bucket"],
    }


def split_manifest(
    manifest: Mapping[str, Any], limit: int = MAX_MANIFEST_BYTES
) -> tuple[dict[str, Any], bytes | None]:
    """Keep the claim small: above ``limit`` bytes, move the outputs and unexpected lists into a
    content-addressed object ``_tally/outputs-<sha256>.json`` (relative to the run folder).

    Returns (manifest, None) when it fits, else (small manifest naming ``outputs_object``, the
    object's bytes). Write the object first: it needs no precondition (same content, same name).
    """
    if len(to_bytes(manifest)) <= limit:
        return dict(manifest), None
    lists = to_bytes({"outputs": manifest["outputs"], "unexpected": manifest["unexpected"]})
    name = f"{TALLY_FOLDER}outputs-{hashlib.sha256(lists).hexdigest()}.json"
    small = {**manifest, "outputs": [], "unexpected": [], "outputs_object": name}
    return small, lists
