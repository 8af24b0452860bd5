"""The registry's model over an ObjectStore: bucket layout, caches, registration, defaults.

Layout (docs/design.md): `workflows/<workflow>/<version>.json` per version (immutable) and
`defaults/<workflow>.json` = `{"version": ...}`, the explicit default pointer. Without a valid
pointer, a workflow's default is its highest version (tally_registry.versions).

Caching: versions never change once written, so they are cached without expiry (bounded LRU).
Lists and defaults are cached for `list_ttl` seconds; this instance's own writes invalidate them
at once, other instances see them within the TTL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tally_registry import spec as specs
from tally_registry.cache import MISS, LruCache, TtlCache
from tally_registry.errors import (
    DefaultConflict,
    InvalidStoredDocument,
    JsonError,
    PreconditionFailed,
    StoreError,
    VersionConflict,
)
from tally_registry.log import log
from tally_registry.store import ObjectStore
from tally_registry.versions import highest, sort_versions

__all__ = [
    "DEFAULTS_PREFIX",
    "SPECS_PREFIX",
    "Registry",
    "VersionDoc",
    "WorkflowInfo",
    "default_object",
    "etag_of",
    "parse_default_object",
    "parse_pointer",
    "parse_spec_object",
    "spec_object",
]

SPECS_PREFIX = "workflows/"
DEFAULTS_PREFIX = "defaults/"
_ALL = ("*all*",)  # key of the full catalogue in the list cache; not a valid workflow name


def spec_object(workflow: str, version: str) -> str:
    return f"{SPECS_PREFIX}{workflow}/{version}.json"


def default_object(workflow: str) -> str:
    return f"{DEFAULTS_PREFIX}{workflow}.json"


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class VersionDoc:
    """A registered version: its normalized spec and the response body served for it."""

    workflow: str
    version: str
    spec: dict[str, Any]
    body: bytes  # canonical JSON of `spec`: identical across instances, so is the ETag
    etag: str

    @classmethod
    def of(cls, spec: dict[str, Any]) -> VersionDoc:
        body = specs.canonical_json(spec)
        return cls(spec["workflow"], spec["version"], spec, body, etag_of(body))


@dataclass(frozen=True)
class WorkflowInfo:
    workflow: str
    versions: tuple[str, ...]  # ascending in version order
    default_version: str
    default_source: str  # "explicit" (pointer object) or "highest"

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "versions": list(self.versions),
            "default_version": self.default_version,
            "default_source": self.default_source,
        }


def parse_spec_object(name: str) -> tuple[str, str] | None:
    """(workflow, version) of `workflows/<workflow>/<version>.json`; None for other names."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] + "/" != SPECS_PREFIX or not parts[2].endswith(".json"):
        return None
    workflow, version = parts[1], parts[2][: -len(".json")]
    if specs.is_valid_name(workflow) and specs.is_valid_name(version):
        return workflow, version
    return None


def parse_default_object(name: str) -> str | None:
    if not name.startswith(DEFAULTS_PREFIX) or not name.endswith(".json"):
        return None
    workflow = name[len(DEFAULTS_PREFIX) : -len(".json")]
    return workflow if specs.is_valid_name(workflow) else None


def parse_pointer(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and specs.is_valid_name(version) else None


class Registry:
    def __init__(
        self,
        store: ObjectStore,
        *,
        list_ttl: float = 10.0,
        version_cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        folder: specs.RunFolder = specs.DEFAULT_FOLDER,
    ) -> None:
        self.store = store
        self.folder = folder  # what registrations may not name, and the path budget
        self.list_ttl = list_ttl
        self._versions = LruCache(version_cache_size)
        self._lists = TtlCache(list_ttl, clock=clock)

    # -- reads ---------------------------------------------------------------------------------

    def version(self, workflow: str, version: str) -> VersionDoc | None:
        """The registered version, or None. Misses are not cached: a version may appear."""
        key = (workflow, version)
        doc = self._versions.get(key)
        if doc is not MISS:
            return doc
        found = self.store.read(spec_object(workflow, version))
        if found is None:
            return None
        doc = self._load_version(workflow, version, found[0])
        self._warn_if_unfit(doc)
        self._versions.put(key, doc)
        return doc

    def workflow(self, workflow: str) -> WorkflowInfo | None:
        """The workflow's versions and default (None if it has no version), cached for the TTL."""
        info = self._lists.get(workflow)
        if info is not MISS:
            return info
        names = self.store.list_names(f"{SPECS_PREFIX}{workflow}/")
        versions = [p[1] for p in map(parse_spec_object, names) if p and p[0] == workflow]
        pointer = None
        if versions:
            found = self.store.read(default_object(workflow))
            pointer = self._pointer(workflow, found[0]) if found else None
        info = self._info(workflow, versions, pointer)
        self._lists.put(workflow, info)
        return info

    def workflows(self) -> list[WorkflowInfo]:
        """Every workflow with at least one version, by name; cached for the TTL."""
        cached = self._lists.get(_ALL)
        if cached is not MISS:
            return cached
        by_workflow: dict[str, list[str]] = {}
        for parsed in map(parse_spec_object, self.store.list_names(SPECS_PREFIX)):
            if parsed:
                by_workflow.setdefault(parsed[0], []).append(parsed[1])
        pointers: dict[str, str | None] = {}
        for name in self.store.list_names(DEFAULTS_PREFIX):
            workflow = parse_default_object(name)
            if workflow in by_workflow:
                found = self.store.read(name)
                pointers[workflow] = self._pointer(workflow, found[0]) if found else None
        result = []
        for workflow in sorted(by_workflow):
            info = self._info(workflow, by_workflow[workflow], pointers.get(workflow))
            if info is not None:
                self._lists.put(workflow, info)
                result.append(info)
        self._lists.put(_ALL, result)
        return result

    # -- writes --------------------------------------------------------------------------------

    def register(self, spec: dict[str, Any]) -> tuple[bool, VersionDoc]:
        """Register a normalized, valid spec: (True, doc) when created, (False, doc) when the
        same content was already registered. Raises VersionConflict for different content."""
        workflow, version = spec["workflow"], spec["version"]
        wanted = VersionDoc.of(spec)
        existing = self._existing(workflow, version)
        if existing is None:
            stored = json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            try:
                self.store.write(spec_object(workflow, version), stored.encode(), 0)
            except PreconditionFailed:
                # Lost a race with a concurrent registration: compare with the winner's.
                existing = self._existing(workflow, version)
                if existing is None:
                    raise StoreError(
                        f"{spec_object(workflow, version)} exists but cannot be read"
                    ) from None
            else:
                self._versions.put((workflow, version), wanted)
                self._invalidate(workflow)
                return True, wanted
        if existing.body == wanted.body:
            return False, existing
        raise _version_conflict(workflow, version)

    def set_default(self, workflow: str, version: str, attempts: int = 3) -> str | None:
        """Point the workflow's default at `version` (which must exist); return the previous
        explicit default. The pointer is replaced only if unchanged since it was read."""
        for _ in range(attempts):
            found = self.store.read(default_object(workflow))
            previous, generation = (parse_pointer(found[0]), found[1]) if found else (None, 0)
            if previous == version:
                break
            data = specs.canonical_json({"version": version})
            try:
                self.store.write(default_object(workflow), data, generation)
            except PreconditionFailed:
                continue
            break
        else:
            raise DefaultConflict(
                f"the default of {workflow} kept changing under concurrent writers: retry"
            )
        self._invalidate(workflow)
        return previous

    # -- helpers -------------------------------------------------------------------------------

    def _existing(self, workflow: str, version: str) -> VersionDoc | None:
        try:
            return self.version(workflow, version)
        except InvalidStoredDocument:
            # Whatever is stored there, it is not this spec: versions are immutable.
            raise _version_conflict(workflow, version) from None

    def _invalidate(self, workflow: str) -> None:
        self._lists.invalidate(workflow)
        self._lists.invalidate(_ALL)

    def _pointer(self, workflow: str, data: bytes) -> str | None:
        version = parse_pointer(data)
        if version is None:
            log(
                "WARNING",
                f"ignoring malformed default pointer {default_object(workflow)}: "
                'expected {"version": "<name>"}',
                workflow=workflow,
            )
        return version

    def _info(self, workflow: str, versions: list[str], pointer: str | None) -> WorkflowInfo | None:
        if not versions:
            return None
        ordered = tuple(sort_versions(versions))
        if pointer is not None and pointer in ordered:
            return WorkflowInfo(workflow, ordered, pointer, "explicit")
        if pointer is not None:
            log(
                "WARNING",
                f"default pointer of {workflow} names unknown version {pointer!r}; "
                "using the highest version",
                workflow=workflow,
            )
        return WorkflowInfo(workflow, ordered, highest(ordered) or "", "highest")

    def _warn_if_unfit(self, doc: VersionDoc) -> None:
        """A spec registered before the configuration changed stays served (versions are
        immutable, and the event handler must see it to report its runs), but is flagged."""
        problems = specs.folder_problems(doc.spec, self.folder)
        if problems:
            log(
                "WARNING",
                f"{spec_object(doc.workflow, doc.version)} conflicts with the configuration "
                "(TALLY_MANIFEST_NAME, TALLY_FAILURE_MARKER, TALLY_LAYOUT): its runs may never "
                "complete; register a corrected spec as a new version",
                workflow=doc.workflow,
                version=doc.version,
                details=problems,
            )

    @staticmethod
    def _load_version(workflow: str, version: str, data: bytes) -> VersionDoc:
        name = spec_object(workflow, version)
        try:
            doc = specs.loads_strict(data)
        except JsonError as exc:
            raise InvalidStoredDocument(f"{name} is not valid JSON: {exc}") from None
        problems = specs.validate(doc, None)  # stored under any configuration: see _warn_if_unfit
        if isinstance(doc, dict):
            for field, expected in (("workflow", workflow), ("version", version)):
                if doc.get(field) != expected:
                    problems.append(
                        {
                            "pointer": f"/{field}",
                            "message": f"{field} {doc.get(field)!r} differs from the object name "
                            f"({expected!r})",
                        }
                    )
        if problems:
            raise InvalidStoredDocument(f"{name} is not a valid spec", problems)
        return VersionDoc.of(specs.normalize(doc))


def _version_conflict(workflow: str, version: str) -> VersionConflict:
    return VersionConflict(
        f"{workflow} {version} is already registered with different content and versions are "
        "immutable: register the change as a new version",
        [{"workflow": workflow, "version": version}],
    )
