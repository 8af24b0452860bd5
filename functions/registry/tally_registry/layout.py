"""What tally names in the outputs bucket, as far as the registry must know it.

The registry is deployed apart from the event handler, so it parses `TALLY_LAYOUT` itself, with
the handler's rules (functions/event_handler/tally_handler/layout.py), but keeps only what it
needs: the run folder prefix of a workflow version, to give spec paths a byte budget (Cloud
Storage object names are at most 1,024 UTF-8 bytes) and to scope reconcile requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_LAYOUT",
    "DEFAULT_TEMPLATE",
    "MAX_OBJECT_NAME_BYTES",
    "MIN_RUN_ID",
    "TALLY_FOLDER",
    "RunLayout",
]

DEFAULT_TEMPLATE = "{workflow}/{version}/{run_id}/{path}"
TALLY_FOLDER = "_tally/"  # tally's own objects, in run folders and at the bucket root
MAX_OBJECT_NAME_BYTES = 1024  # Cloud Storage's limit
MIN_RUN_ID = "x"  # a run id takes at least one byte

_RUN_FIELDS = ("workflow", "version", "run_id")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class RunLayout:
    template: str
    segments: tuple[str, ...]  # the run folder's segments: literal text or a placeholder name
    placeholders: frozenset[int]  # indexes into `segments` that are placeholders

    @classmethod
    def parse(cls, template: str) -> RunLayout:
        """Parse a template; raises ValueError saying what is wrong with it."""
        # The event handler's Layout.parse, repeated (see the module docstring);
        # test_layout_parsing_agrees_with_the_event_handler holds the two together.

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
            match = _PLACEHOLDER.fullmatch(part)
            if not part:
                raise invalid("it has an empty segment (a leading '/' or '//')")
            if match is None and ("{" in part or "}" in part):
                raise invalid(f"segment {part!r} mixes text and a placeholder; use whole segments")
            if match is not None:
                name = match.group(1)
                if name not in _RUN_FIELDS:
                    raise invalid(f"{{{name}}} is not a placeholder of the run folder")
                if name in segments:
                    raise invalid(f"placeholder {{{name}}} appears twice")
                placeholders.add(index)
            segments.append(match.group(1) if match else part)
        missing = [name for name in _RUN_FIELDS if name not in segments]
        if missing:
            raise invalid("it lacks " + ", ".join(f"{{{name}}}" for name in missing))
        return cls(template, tuple(segments), frozenset(placeholders))

    def run_prefix(self, workflow: str, version: str, run_id: str = MIN_RUN_ID) -> str:
        """The run folder's prefix inside the bucket, ending in "/"."""
        return self._prefix(len(self.segments), workflow, version, run_id)

    def path_budget(self, workflow: str, version: str) -> int:
        """The most UTF-8 bytes a path relative to a run folder of this version may take."""
        return MAX_OBJECT_NAME_BYTES - len(self.run_prefix(workflow, version).encode())

    def version_prefix(self, workflow: str, version: str) -> str | None:
        """The prefix holding exactly the run folders of this version, when the layout has one
        (workflow and version both before the run id); None otherwise."""
        end = self.segments.index("run_id")
        if not {"workflow", "version"} <= set(self.segments[:end]):
            return None
        return self._prefix(end, workflow, version, MIN_RUN_ID)

    def _prefix(self, end: int, workflow: str, version: str, run_id: str) -> str:
        values = {"workflow": workflow, "version": version, "run_id": run_id}
        return "".join(
            (values[s] if i in self.placeholders else s) + "/"
            for i, s in enumerate(self.segments[:end])
        )


DEFAULT_LAYOUT = RunLayout.parse(DEFAULT_TEMPLATE)
