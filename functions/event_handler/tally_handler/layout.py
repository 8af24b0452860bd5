"""Object names <-> run outputs, through the layout template.

The default template is ``{workflow}/{version}/{run_id}/{path}``.

A template is "/"-separated segments; each is either literal text or exactly one placeholder.
``workflow``, ``version`` and ``run_id`` are single non-empty segments in any order; ``path`` is the
last placeholder and takes the rest of the name (non-empty, may hold "/"). Object names are matched
as text: any Unicode, spaces, ``#``, ``?`` and ``%`` are ordinary characters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_TEMPLATE",
    "TALLY_FOLDER",
    "Layout",
    "OutputKind",
    "Run",
    "RunOutput",
    "classify",
    "idempotency_key",
]

DEFAULT_TEMPLATE = "{workflow}/{version}/{run_id}/{path}"
# tally's own objects: in a run folder (the record, large output lists) and at the bucket root
TALLY_FOLDER = "_tally/"

_RUN_FIELDS = ("workflow", "version", "run_id")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class OutputKind(StrEnum):
    """What an object in a run folder is to tally."""

    MANIFEST = "manifest"
    TALLY_INTERNAL = "tally-internal"
    FAILURE_MARKER = "failure-marker"
    OUTPUT = "output"


def classify(path: str, manifest_name: str, failure_marker: str) -> OutputKind:
    """Classify a path relative to its run folder: tally's own writes must never trigger work."""
    if path == manifest_name:
        return OutputKind.MANIFEST
    if path.startswith(TALLY_FOLDER):
        return OutputKind.TALLY_INTERNAL
    if path == failure_marker:
        return OutputKind.FAILURE_MARKER
    return OutputKind.OUTPUT


@dataclass(frozen=True, slots=True)
class RunOutput:
    workflow: str
    version: str
    run_id: str
    path: str  # relative to the run folder


@dataclass(frozen=True, slots=True)
class Run:
    """One run folder; ``key`` (bucket/workflow/version/run_id) is its ``run_key`` everywhere."""

    bucket: str
    workflow: str
    version: str
    run_id: str
    prefix: str  # the run folder inside the bucket, ending in "/" (depends on the layout)

    @property
    def key(self) -> str:
        return f"{self.bucket}/{self.workflow}/{self.version}/{self.run_id}"

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.key)


def idempotency_key(run_key: str) -> str:
    """Stable per run: consumers of completion messages de-duplicate on it."""
    return hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Layout:
    template: str
    segments: tuple[str, ...]  # the run folder's segments: literals and placeholder names
    placeholders: frozenset[int]  # indexes into ``segments`` that are placeholders

    @classmethod
    def parse(cls, template: str) -> Layout:
        """Parse a template; raises ValueError naming what is wrong with it."""
        # tally_registry/layout.py repeats this parse: the registry is deployed apart and cannot
        # import the handler. test_registry_config holds the two to the same answers.

        def invalid(problem: str) -> ValueError:
            return ValueError(
                f"layout template {template!r} is invalid: {problem} "
                f"(example: {DEFAULT_TEMPLATE!r} or 'runs/{DEFAULT_TEMPLATE}')"
            )

        parts = template.split("/")
        if parts[-1] != "{path}":
            raise invalid("it must end with the segment '/{path}'")
        segments: list[str] = []
        placeholders: set[int] = set()
        for index, part in enumerate(parts[:-1]):
            if not part:
                raise invalid("it has an empty segment (a leading '/' or '//')")
            match = _PLACEHOLDER.fullmatch(part)
            if match:
                name = match.group(1)
                if name == "path":
                    raise invalid("'{path}' must be the last segment, and appear once")
                if name not in _RUN_FIELDS:
                    raise invalid(f"unknown placeholder {{{name}}}; use {_fields_text()}")
                if name in segments:
                    raise invalid(f"placeholder {{{name}}} appears twice")
                placeholders.add(index)
            elif "{" in part or "}" in part:
                raise invalid(f"segment {part!r} mixes text and a placeholder; use whole segments")
            segments.append(match.group(1) if match else part)
        missing = [name for name in _RUN_FIELDS if name not in segments]
        if missing:
            raise invalid("it lacks " + ", ".join(f"{{{name}}}" for name in missing))
        return cls(template, tuple(segments), frozenset(placeholders))

    def match(self, object_name: str) -> RunOutput | None:
        """The run output an object name stands for, or None when it is outside the layout."""
        parts = object_name.split("/", len(self.segments))
        if len(parts) <= len(self.segments) or not parts[-1]:
            return None
        values: dict[str, str] = {}
        for index, (segment, part) in enumerate(zip(self.segments, parts, strict=False)):
            if index in self.placeholders:
                if not part:
                    return None
                values[segment] = part
            elif part != segment:
                return None
        return RunOutput(path=parts[-1], **values)

    def run_prefix(self, workflow: str, version: str, run_id: str) -> str:
        """The run folder's prefix inside the bucket, ending in "/"."""
        values = {"workflow": workflow, "version": version, "run_id": run_id}
        for name, value in values.items():
            if not value or "/" in value:
                raise ValueError(f"{name} {value!r} must be one non-empty path segment")
        return (
            "/".join(
                values[segment] if index in self.placeholders else segment
                for index, segment in enumerate(self.segments)
            )
            + "/"
        )

    def run(self, bucket: str, output: RunOutput) -> Run:
        prefix = self.run_prefix(output.workflow, output.version, output.run_id)
        return Run(bucket, output.workflow, output.version, output.run_id, prefix)

    def object_name(self, output: RunOutput) -> str:
        return self.run_prefix(output.workflow, output.version, output.run_id) + output.path

    def version_prefix(self, workflow: str, version: str) -> str | None:
        """The prefix every run folder of one workflow version starts with, when the template
        names workflow and version before run_id (the default does); else None."""
        values = {"workflow": workflow, "version": version}
        text = ""
        for index, segment in enumerate(self.segments):
            if index not in self.placeholders:
                text += segment + "/"
            elif segment == "run_id":
                return None
            else:
                text += values.pop(segment) + "/"
                if not values:
                    return text
        return None

    def runs_root_prefix(self) -> str:
        """The literal text before the first placeholder: every run folder starts with it."""
        first = min(self.placeholders)
        return "".join(segment + "/" for segment in self.segments[:first])

    @property
    def depth(self) -> int:
        """Number of segments in a run folder's prefix (for listing runs level by level)."""
        return len(self.segments)


def _fields_text() -> str:
    return ", ".join(f"{{{name}}}" for name in (*_RUN_FIELDS, "path"))
