"""A workflow version's spec, as the registry returns it: the expected outputs of its runs.

``GET /workflows/{workflow}/versions/{version}`` answers the spec object, or ``{"spec": {...}}``:
``{"workflow", "version", "expected_outputs": [{"path": ...} | {"pattern": ..., "count": n}],
"deadline_minutes"?}``; each expected output may carry ``required`` (default true) and
``description``.

Glob patterns: ``*`` and ``?`` never cross "/", ``**`` does (``a/**/b`` also matches ``a/b``),
``[...]``/``[!...]`` are character classes of one character other than "/". Each is compiled once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tally_handler.errors import SpecError

__all__ = [
    "Expected",
    "ExpectedPath",
    "ExpectedPattern",
    "Spec",
    "SpecError",
    "compile_glob",
    "translate_glob",
]


@dataclass(frozen=True, slots=True)
class ExpectedPath:
    path: str
    required: bool = True
    description: str | None = None

    @property
    def label(self) -> Mapping[str, str]:
        """How the manifest names this expected output: as the spec does."""
        return {"path": self.path}


@dataclass(frozen=True, slots=True)
class ExpectedPattern:
    pattern: str
    count: int
    regex: re.Pattern[str]
    required: bool = True
    description: str | None = None

    @classmethod
    def compile(
        cls, pattern: str, count: int, required: bool = True, description: str | None = None
    ) -> ExpectedPattern:
        return cls(pattern, count, compile_glob(pattern), required, description)

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None

    @property
    def label(self) -> Mapping[str, str]:
        return {"pattern": self.pattern}


Expected = ExpectedPath | ExpectedPattern


@dataclass(frozen=True, slots=True)
class Spec:
    workflow: str
    version: str
    exact: tuple[ExpectedPath, ...]
    patterns: tuple[ExpectedPattern, ...]
    deadline_minutes: int | None = None
    # Derived once: a run of 10,000 outputs scans with them 10,000 times.
    required_paths: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _by_path: Mapping[str, ExpectedPath] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Listing order: code point order equals the UTF-8 byte order Cloud Storage lists in.
        required = tuple(sorted(item.path for item in self.exact if item.required))
        object.__setattr__(self, "required_paths", required)
        object.__setattr__(self, "_by_path", {item.path: item for item in self.exact})

    @property
    def required_patterns(self) -> tuple[ExpectedPattern, ...]:
        return tuple(item for item in self.patterns if item.required)

    def expects(self, path: str) -> Expected | None:
        """The expected output ``path`` satisfies: an exact path first, else the first pattern
        (in spec order) that matches. One object satisfies at most one expected output."""
        exact = self._by_path.get(path)
        if exact is not None:
            return exact
        return next((item for item in self.patterns if item.matches(path)), None)

    @classmethod
    def from_json(cls, document: Any) -> Spec:
        """Build from the registry's JSON; raises SpecError saying what is wrong."""
        if isinstance(document, dict) and isinstance(document.get("spec"), dict):
            document = document["spec"]
        if not isinstance(document, dict):
            raise SpecError(f"a spec is a JSON object, not {type(document).__name__}")
        workflow = _text(document, "workflow")
        version = _text(document, "version")
        where = f"spec {workflow}/{version}"
        items = document.get("expected_outputs")
        if not isinstance(items, list):
            raise SpecError(f"{where}: expected_outputs must be a list")
        exact: list[ExpectedPath] = []
        patterns: list[ExpectedPattern] = []
        for index, item in enumerate(items):
            entry = _expected(item, f"{where}: expected_outputs[{index}]")
            if isinstance(entry, ExpectedPath):
                exact.append(entry)
            else:
                patterns.append(entry)
        # A repeated entry could never be satisfied: the first one takes every match.
        for kind, names in (
            ("paths", [item.path for item in exact]),
            ("patterns", [item.pattern for item in patterns]),
        ):
            repeated = sorted(name for name, n in Counter(names).items() if n > 1)
            if repeated:
                raise SpecError(f"{where}: {kind} listed more than once: {repeated}")
        deadline = document.get("deadline_minutes")
        if deadline is not None and (not _is_int(deadline) or deadline <= 0):
            raise SpecError(f"{where}: deadline_minutes must be a positive integer")
        return cls(workflow, version, tuple(exact), tuple(patterns), deadline)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise SpecError(f"a spec needs a non-empty string {key!r}, got {value!r}")
    return value


def _expected(item: Any, where: str) -> Expected:
    if not isinstance(item, dict):
        raise SpecError(f"{where} must be an object with 'path' or 'pattern'")
    required = item.get("required", True)
    if not isinstance(required, bool):
        raise SpecError(f"{where}: required must be true or false")
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise SpecError(f"{where}: description must be a string")
    if ("path" in item) == ("pattern" in item):
        raise SpecError(f"{where} needs exactly one of 'path' and 'pattern'")
    if "path" in item:
        path = item["path"]
        if not isinstance(path, str) or not path or path.startswith("/"):
            raise SpecError(f"{where}: path must be a non-empty relative path, got {path!r}")
        return ExpectedPath(path, required, description)
    pattern, count = item["pattern"], item.get("count")
    if not isinstance(pattern, str) or not pattern or pattern.startswith("/"):
        raise SpecError(f"{where}: pattern must be a non-empty relative glob, got {pattern!r}")
    if not _is_int(count) or count < 1:
        raise SpecError(f"{where}: a pattern needs a positive integer count, got {count!r}")
    try:
        return ExpectedPattern.compile(pattern, count, required, description)
    except ValueError as error:
        raise SpecError(f"{where}: {error}") from None


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a path glob; raises ValueError for an unclosed or invalid character class."""
    return re.compile(translate_glob(pattern), re.DOTALL)


def translate_glob(pattern: str) -> str:
    """A path glob -> a regex for ``fullmatch`` (``fnmatch.translate`` lets ``*`` cross "/")."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")  # whole "**" segment: zero or more folders
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            i = _character_class(pattern, i, out)
        else:
            out.append(re.escape(char))
            i += 1
    translated = "".join(out)
    try:
        re.compile(translated)
    except re.error as error:
        raise ValueError(f"pattern {pattern!r} is not a valid glob: {error}") from None
    return translated


def _character_class(pattern: str, start: int, out: list[str]) -> int:
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    i += negate
    if i < len(pattern) and pattern[i] == "]":
        i += 1  # a leading "]" is a member, as in fnmatch
    end = pattern.find("]", i)
    if end < 0:
        raise ValueError(f"pattern {pattern!r} has an unclosed '[' at position {start}")
    members = pattern[start + 1 + negate : end]
    escaped = "".join("\\" + char if char in "\\[]^&~|" else char for char in members)
    out.append("(?!/)[" + ("^" if negate else "") + escaped + "]")
    return end + 1
