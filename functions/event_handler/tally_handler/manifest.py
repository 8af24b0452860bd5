"""What tally announces and what it remembers: the manifest and the announcement record.

**Manifest** (format 3): the run's outputs as one revision announced them. Its canonical bytes
(sorted keys, compact, UTF-8) are fixed when the revision is claimed: they are the completion
message's body, ``output.json``'s content and part of the record, byte for byte, whoever publishes.
Older formats stay readable (``OLD_NAMES``): a revision claimed before an upgrade keeps its bytes.

**Announcement record** (``_tally/announcement.json`` in the run folder): tally's own durable memory
of a run's latest revision. Created with ``ifGenerationMatch=0`` (the claim of revision 1),
rewritten with ``ifGenerationMatch`` of the generation read (takeover, mark, next revision)::

    (none) --claim r=1--> claimed(r) --publish, runs row, output.json, mark--> published(r)
    claimed(r) --lease over: takeover (same manifest bytes, new claimant)--> claimed(r)
    published(r) --the bucket changed, complete again, quiet--> claimed(r+1)

A user deleting or editing ``output.json`` never loses the record; reconciliation restores the
manifest from it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from tally_handler.completeness import Entry, Output
from tally_handler.delivery import rfc3339
from tally_handler.errors import NotTallys
from tally_handler.layout import TALLY_FOLDER, Run, idempotency_key

__all__ = [
    "LEGACY_FORMAT",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMATS",
    "MANIFEST_KIND",
    "MAX_MANIFEST_BYTES",
    "OLD_NAMES",
    "RECORD_FORMAT",
    "RECORD_FORMATS",
    "RECORD_KIND",
    "RECORD_NAME",
    "Claim",
    "ClaimStatus",
    "Manifest",
    "NotTallys",
    "Prior",
    "Record",
    "State",
    "Superseded",
    "adopted_record",
    "build_manifest",
    "first_output_time",
    "outputs_from_object",
    "revision_key",
    "split_manifest",
    "to_bytes",
    "with_todays_names",
]

MANIFEST_KIND = "tally#manifest"
MANIFEST_FORMAT = 3
LEGACY_FORMAT = 1  # tally before revisions: adopted as revision 1 (``adopted_record``)
MANIFEST_FORMATS = (LEGACY_FORMAT, 2, MANIFEST_FORMAT)
RECORD_KIND = "tally#announcement"
RECORD_FORMAT = 2
RECORD_FORMATS = (1, RECORD_FORMAT)
# Keys renamed by manifest format 3 and record format 2 (docs/design.md, "Vocabulary"): an older
# document is read under today's names; its bytes are never rewritten.
OLD_NAMES = {
    "announced_at": "announced_time",
    "claimed_at": "claimed_time",
    "published_at": "published_time",
    "status": "claim_status",  # manifest format 1 and record format 1: claimed or published
}
RECORD_NAME = TALLY_FOLDER + "announcement.json"  # relative to the run folder
# Far below google-cloud-storage's 8 MiB multipart limit: every write stays one request, never a
# resumable upload (the local Storage ignores ifGenerationMatch on those).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)  # rfc3339()'s form


# Same shape as delivery.Source/Request (small StrEnums), unrelated values: kept apart by design.
class State(StrEnum):
    """A revision's verdict: the ``state`` attribute of its message and ``runs.state``."""

    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class ClaimStatus(StrEnum):
    """The announcement record's ``claim_status``: where the latest revision's five steps are."""

    CLAIMED = "claimed"
    PUBLISHED = "published"


def with_todays_names(document: dict[str, Any]) -> dict[str, Any]:
    """A manifest of format 1 or 2, or a record of format 1, under today's key names (the top
    level, its ``claim`` and its ``history`` items)."""

    def renamed(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        return {OLD_NAMES.get(key, key): value for key, value in item.items()}

    document = renamed(document)
    if "claim" in document:
        document["claim"] = renamed(document["claim"])
    if isinstance(document.get("history"), list):
        document["history"] = [renamed(prior) for prior in document["history"]]
    return document


def revision_key(run: Run, revision: int) -> str:
    """Revision 1 keeps the run's historical key; later revisions derive theirs from it."""
    if revision == 1:
        return run.idempotency_key
    return idempotency_key(f"{run.key}#revision-{revision}")


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: str
    claimant: str  # the claiming message (source, id, publish time): a redelivery resumes
    claimed_time: str  # RFC 3339

    @classmethod
    def at(cls, delivery_id: str, claimant: str, when: datetime | str) -> Claim:
        return cls(delivery_id, claimant, rfc3339(when))

    def to_json(self) -> dict[str, str]:
        return {
            "delivery_id": self.delivery_id,
            "claimant": self.claimant,
            "claimed_time": self.claimed_time,
        }

    @classmethod
    def from_json(cls, data: Any) -> Claim:
        if not isinstance(data, dict) or not all(
            isinstance(data.get(key), str) for key in ("delivery_id", "claimant", "claimed_time")
        ):
            raise NotTallys("the claim needs delivery_id, claimant and claimed_time strings")
        try:
            claimed_time = rfc3339(data["claimed_time"])
        except ValueError:
            raise NotTallys("the claim's claimed_time is not RFC 3339") from None
        return cls(data["delivery_id"], data["claimant"], claimed_time)


# A small frozen record like completeness.Output: same shape, unrelated meaning.
@dataclass(frozen=True, slots=True)
class Superseded:
    revision: int
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """One revision of a run's announcement (``outputs`` items are ready-to-serialise dicts)."""

    run: Run
    revision: int
    state: State
    outputs: tuple[Mapping[str, Any], ...]
    unexpected: tuple[Mapping[str, Any], ...]
    failure_reason: str | None
    claim: Claim
    handler_version: str
    first_output_time: str | None = None
    supersedes: Superseded | None = None
    outputs_object: str | None = None  # large runs: the lists live in this _tally/ object
    outputs_count: int = 0
    unexpected_count: int = 0

    @property
    def idempotency_key(self) -> str:
        return revision_key(self.run, self.revision)

    @property
    def announced_time(self) -> str:
        """When the revision was claimed: fixed with its bytes (``runs.announced_time``)."""
        return self.claim.claimed_time

    def generations(self) -> dict[str, int]:
        """Output path -> the generation this revision announced (expected and optional)."""
        return {item["path"]: item["generation"] for item in self.outputs}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": MANIFEST_KIND,
            "format": MANIFEST_FORMAT,
            "run_key": self.run.key,
            "bucket": self.run.bucket,
            "workflow": self.run.workflow,
            "version": self.run.version,
            "run_id": self.run.run_id,
            "run_prefix": self.run.prefix,
            "idempotency_key": self.idempotency_key,
            "revision": self.revision,
            "supersedes": None
            if self.supersedes is None
            else {
                "revision": self.supersedes.revision,
                "idempotency_key": self.supersedes.idempotency_key,
            },
            "state": self.state.value,
            "failure_reason": self.failure_reason,
            "outputs": list(self.outputs),
            "outputs_count": self.outputs_count,
            "unexpected": list(self.unexpected),
            "unexpected_count": self.unexpected_count,
            "outputs_object": self.outputs_object,
            "first_output_time": self.first_output_time,
            "claim": self.claim.to_json(),
            "announced_time": self.announced_time,
            "handler_version": self.handler_version,
        }

    def to_bytes(self) -> bytes:
        return to_bytes(self.to_json())

    def attributes(self) -> dict[str, str]:
        """The completion message's attributes (docs/design.md, "Completion message")."""
        return {
            "workflow": self.run.workflow,
            "version": self.run.version,
            "run_id": self.run.run_id,
            "state": self.state.value,
            "idempotency_key": self.idempotency_key,
            "revision": str(self.revision),
            "bucket": self.run.bucket,
        }

    @classmethod
    def from_bytes(cls, data: bytes, run: Run) -> Manifest:
        """A manifest tally wrote for ``run``; NotTallys says why an object is not one."""
        hint = "tally owns this name in every run folder: move the object elsewhere"
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise NotTallys(f"not a tally manifest (not JSON: {error}); {hint}") from None
        if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
            raise NotTallys(f"not a tally manifest (no kind {MANIFEST_KIND!r}); {hint}")
        if doc.get("format") not in MANIFEST_FORMATS:
            raise NotTallys(
                f"a tally manifest of format {doc.get('format')!r}, not one of"
                f" {', '.join(map(str, MANIFEST_FORMATS))}; {hint}"
            )
        if doc.get("run_key") != run.key:
            raise NotTallys(f"a tally manifest of another run ({doc.get('run_key')!r}); {hint}")
        if doc["format"] != MANIFEST_FORMAT:
            doc = with_todays_names(doc)
        if doc["format"] == LEGACY_FORMAT:  # written before revisions: revision 1, no record
            doc = {**doc, "revision": 1, "supersedes": None}
        try:
            supersedes = doc["supersedes"]
            return cls(
                run=run,
                revision=int(doc["revision"]),
                state=State(doc["state"]),
                outputs=tuple(doc["outputs"]),
                unexpected=tuple(doc["unexpected"]),
                failure_reason=doc["failure_reason"],
                claim=Claim.from_json(doc["claim"]),
                handler_version=doc["handler_version"],
                first_output_time=doc["first_output_time"],
                supersedes=None
                if supersedes is None
                else Superseded(int(supersedes["revision"]), str(supersedes["idempotency_key"])),
                outputs_object=doc["outputs_object"],
                outputs_count=int(doc["outputs_count"]),
                unexpected_count=int(doc["unexpected_count"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise NotTallys(f"a broken tally manifest ({error!r}); {hint}") from None


def build_manifest(
    run: Run,
    *,
    revision: int,
    state: State | str,
    outputs: Sequence[Output],
    unexpected: Sequence[Entry],
    failure_reason: str | None,
    claim: Claim,
    handler_version: str,
    supersedes: Superseded | None = None,
) -> Manifest:
    output_items = tuple(_output(output) for output in outputs)
    unexpected_items = tuple(_object(entry) for entry in unexpected)
    return Manifest(
        run=run,
        revision=revision,
        state=State(state),
        outputs=output_items,
        unexpected=unexpected_items,
        failure_reason=failure_reason,
        claim=claim,
        handler_version=handler_version,
        first_output_time=first_output_time([o.entry for o in outputs], unexpected),
        supersedes=supersedes,
        outputs_count=len(output_items),
        unexpected_count=len(unexpected_items),
    )


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
        return _utc(value)
    except ValueError:
        return value  # informative only: an odd listing time must not block the announcement


def _utc(value: str) -> str:
    """rfc3339(value), without parsing a time already in that form (as the Storage adapter lists
    times: 20,000 of them in a manifest of 10,000 outputs)."""
    return value if _RFC3339.fullmatch(value) else rfc3339(value)


def first_output_time(outputs: Sequence[Entry], unexpected: Sequence[Entry] = ()) -> str | None:
    """Creation time of the run's earliest object (the runs table's first_output_time)."""
    times = []
    for entry in (*outputs, *unexpected):
        try:
            times.append(_utc(entry.time_created))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            continue  # unknown or unreadable: the runs table's column must stay a TIMESTAMP
    return min(times, default=None)


def to_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def split_manifest(
    manifest: Manifest, limit: int = MAX_MANIFEST_BYTES
) -> tuple[Manifest, bytes | None]:
    """Keep the manifest small: above ``limit`` bytes, move the outputs and unexpected lists into
    a content-addressed object ``_tally/outputs-<sha256>.json`` (relative to the run folder).

    Returns (manifest, None) when it fits, else (small manifest naming ``outputs_object``, the
    object's bytes). Write the object first: it needs no precondition (same content, same name).
    """
    if len(manifest.to_bytes()) <= limit:
        return manifest, None
    lists = to_bytes({"outputs": list(manifest.outputs), "unexpected": list(manifest.unexpected)})
    name = f"{TALLY_FOLDER}outputs-{hashlib.sha256(lists).hexdigest()}.json"
    return replace(manifest, outputs=(), unexpected=(), outputs_object=name), lists


def outputs_from_object(data: bytes) -> tuple[Mapping[str, Any], ...]:
    """The outputs list of a split manifest's ``outputs_object``."""
    try:
        return tuple(json.loads(data)["outputs"])
    except (ValueError, KeyError, TypeError) as error:
        raise NotTallys(f"a broken tally outputs object ({error!r})") from None


@dataclass(frozen=True, slots=True)
class Prior:
    """An earlier revision, kept in the record so `tally status` can show the run's history."""

    revision: int
    idempotency_key: str
    published_time: str | None


@dataclass(frozen=True, slots=True)
class Record:
    """The announcement record: the latest revision's claim, its exact bytes, its progress."""

    revision: int
    claim_status: ClaimStatus
    claim: Claim
    manifest: bytes  # the exact bytes published under this revision's key, forever (any format)
    published_time: str | None = None
    history: tuple[Prior, ...] = field(default_factory=tuple)

    @property
    def published(self) -> bool:
        return self.claim_status is ClaimStatus.PUBLISHED

    def manifest_md5(self) -> str:
        """Base64 MD5 of the manifest bytes, as Storage reports ``md5Hash``."""
        digest = hashlib.md5(self.manifest, usedforsecurity=False).digest()
        return base64.b64encode(digest).decode("ascii")

    def is_stale(self, now: datetime, lease_seconds: float) -> bool:
        """A claim whose claimant did not finish within the lease may be taken over."""
        if self.published:
            return False
        return self.age_seconds(now) > lease_seconds

    def age_seconds(self, now: datetime) -> float:
        claimed_time = datetime.fromisoformat(self.claim.claimed_time.replace("Z", "+00:00"))
        return (now - claimed_time).total_seconds()

    def to_bytes(self) -> bytes:
        return to_bytes(
            {
                "kind": RECORD_KIND,
                "format": RECORD_FORMAT,
                "revision": self.revision,
                "claim_status": self.claim_status.value,
                "claim": self.claim.to_json(),
                "manifest": self.manifest.decode("utf-8"),
                "published_time": self.published_time,
                "history": [
                    {
                        "revision": p.revision,
                        "idempotency_key": p.idempotency_key,
                        "published_time": p.published_time,
                    }
                    for p in self.history
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        hint = f"{RECORD_NAME} is tally's own: restore it from a bucket version or delete it"
        try:
            doc = json.loads(data)
            if doc.get("kind") != RECORD_KIND or doc.get("format") not in RECORD_FORMATS:
                raise ValueError(f"kind {doc.get('kind')!r} format {doc.get('format')!r}")
            if doc["format"] != RECORD_FORMAT:
                doc = with_todays_names(doc)
            return cls(
                revision=int(doc["revision"]),
                claim_status=ClaimStatus(doc["claim_status"]),
                claim=Claim.from_json(doc["claim"]),
                manifest=doc["manifest"].encode("utf-8"),
                published_time=doc["published_time"],
                history=tuple(
                    Prior(int(p["revision"]), str(p["idempotency_key"]), p["published_time"])
                    for p in doc["history"]
                ),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise NotTallys(f"a broken announcement record ({error!r}); {hint}") from None

    def manifest_of(self, run: Run) -> Manifest:
        return Manifest.from_bytes(self.manifest, run)


def adopted_record(data: bytes, run: Run) -> Record:
    """The record of a manifest found at ``output.json`` with no record beside it (tally before
    revisions, or a deleted record): revision 1 of format 1 says itself whether it was published;
    later formats are written there only after the publish. NotTallys: not tally's manifest."""
    manifest = Manifest.from_bytes(data, run)
    doc = with_todays_names(json.loads(data))
    published = doc.get("claim_status", ClaimStatus.PUBLISHED.value) == ClaimStatus.PUBLISHED
    return Record(
        manifest.revision,
        ClaimStatus.PUBLISHED if published else ClaimStatus.CLAIMED,
        manifest.claim,
        data,
        published_time=doc.get("published_time"),
    )
