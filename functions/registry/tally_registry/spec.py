"""Spec format: strict JSON parsing, JSON Schema + semantic validation, canonical JSON, globs.

A spec lists a workflow version's expected outputs: an exact `path`, or a glob `pattern` with the
exact `count` of objects it must match. jsonschema is imported on first validation only.

Some checks depend on the configuration shared with the event handler (a `RunFolder`: the
manifest and failure marker names, and the layout that bounds a path's bytes); the others hold
whatever the configuration.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally_registry.errors import GlobError, JsonError
from tally_registry.layout import DEFAULT_LAYOUT, MAX_OBJECT_NAME_BYTES, TALLY_FOLDER, RunLayout

__all__ = [
    "DEFAULT_FOLDER",
    "NAME_RE",
    "RESERVED_WORKFLOW",
    "SCHEMA_PATH",
    "Problem",
    "RunFolder",
    "canonical_json",
    "compile_glob",
    "folder_problems",
    "is_valid_name",
    "load_schema",
    "loads_strict",
    "min_match_bytes",
    "normalize",
    "pointer",
    "sort_problems",
    "validate",
]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "spec.schema.json"
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
RESERVED_WORKFLOW = TALLY_FOLDER[:-1]  # tally's bucket-level objects live under "_tally/"

Problem = dict[str, str]  # {"pointer": JSON pointer, "message": what is wrong and what to do}

_validator_lock = threading.Lock()
_validator: Any = None


@dataclass(frozen=True)
class RunFolder:
    """What tally itself names in every run folder (TALLY_MANIFEST_NAME, TALLY_FAILURE_MARKER;
    the "_tally/" folder is fixed) and how run folders are named (TALLY_LAYOUT)."""

    manifest_name: str = "output.json"
    failure_marker: str = "_FAILED"
    layout: RunLayout = DEFAULT_LAYOUT


DEFAULT_FOLDER = RunFolder()


def is_valid_name(name: str) -> bool:
    """Workflow and version names: `[A-Za-z0-9._-]{1,100}`, except `.` and `..`."""
    return NAME_RE.fullmatch(name) is not None and name not in (".", "..")


def pointer(path: Any) -> str:
    """JSON pointer (RFC 6901) of a path of keys and indexes; the root is ``""``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise JsonError(f"duplicate key {key!r}: each key may appear once in an object")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise JsonError(f"{name} is not valid JSON: use a number or null")


def loads_strict(data: bytes) -> Any:
    """Parse a UTF-8 JSON body, refusing duplicate keys and NaN/Infinity (not JSON)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonError(f"the body is not UTF-8 (byte {exc.start}): send UTF-8 JSON") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
        # "\ud800" escapes parse to lone surrogates, which no UTF-8 name or body can hold.
        json.dumps(doc, ensure_ascii=False).encode()
    except json.JSONDecodeError as exc:
        raise JsonError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise JsonError("the JSON document is nested too deeply") from None
    except UnicodeEncodeError:
        raise JsonError(
            "the JSON holds an unpaired surrogate escape such as \\ud800: send valid Unicode"
        ) from None
    return doc


def canonical_json(doc: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no whitespace, UTF-8."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (from a "\ud800" escape) has no UTF-8
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def normalize(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with defaults filled in (`required: true`) and integral floats as ints.

    Two bodies that mean the same spec normalize to the same canonical JSON, which is what
    idempotent registration compares.
    """
    out = {k: v for k, v in spec.items() if k != "$schema"}
    if isinstance(out.get("deadline_minutes"), float):
        out["deadline_minutes"] = int(out["deadline_minutes"])
    entries = []
    for entry in spec.get("expected_outputs", []):
        e = dict(entry)
        e.setdefault("required", True)
        if isinstance(e.get("count"), float):
            e["count"] = int(e["count"])
        entries.append(e)
    out["expected_outputs"] = entries
    return out


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile tally's glob dialect (the event handler's), matched against a whole path relative
    to the run folder.

    `*` matches any run of characters except `/`; `?` one character except `/`; `**` any run
    including `/`, and a whole `**/` segment zero or more folders (`a/**/b` matches `a/b`);
    `[abc]`, `[a-z]`, `[!abc]` or `[^abc]` one character (never `/`) from, or not from, the
    class; a `]` first in a class is a member. Other characters are literal. A pattern without
    a wildcard is refused: an exact name is a `path`.
    """
    out: list[str] = []
    wild = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
            wild = True
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            wild = True
            continue
        if c == "*":
            out.append("[^/]*")
            wild = True
        elif c == "?":
            out.append("[^/]")
            wild = True
        elif c == "[":
            i = _compile_class(pattern, i, out)
            wild = True
        else:
            out.append(re.escape(c))
        i += 1
    if not wild:
        raise GlobError("no wildcard ('*', '?' or '[...]'): use 'path' for an exact object name")
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _compile_class(pattern: str, start: int, out: list[str]) -> int:
    """Append the regex of the class opening at `start`; return the index of its `]`."""
    j = start + 1
    negate = j < len(pattern) and pattern[j] in "!^"
    if negate:
        j += 1
    end = j + 1 if j < len(pattern) and pattern[j] == "]" else j
    end = pattern.find("]", end)
    if end < 0:
        raise GlobError(
            f"unclosed '[' at position {start}: close the character class with ']' "
            "(write '[[]' for a literal '[')"
        )
    body = pattern[j:end]
    if "/" in body:
        raise GlobError("a character class cannot contain '/': classes match within a segment")
    parts: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            lo, hi = body[k], body[k + 2]
            if lo > hi:
                raise GlobError(f"reversed range '{lo}-{hi}' in a class: write '{hi}-{lo}'")
            parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
            k += 3
        else:
            parts.append(re.escape(body[k]))
            k += 1
    out.append(("[^/" if negate else "[") + "".join(parts) + "]")
    return end


def _validator_instance() -> Any:
    global _validator  # noqa: PLW0603 - built once, on first use, to keep cold start light
    with _validator_lock:
        if _validator is None:
            import jsonschema  # lazy: about 100 ms of imports, paid by the first validation

            schema = json.loads(SCHEMA_PATH.read_text())
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            _validator = cls(schema)
        return _validator


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _schema_problems(doc: Any) -> list[Problem]:
    problems = []
    for err in _validator_instance().iter_errors(doc):
        messages = err.schema.get("x-messages", {}) if isinstance(err.schema, dict) else {}
        message = messages.get(err.validator) or err.message
        if err.validator == "additionalProperties" and message != err.message:
            message = f"{err.message}; {message}"  # keep jsonschema's naming of the field
        where = pointer(err.absolute_path)
        if err.validator == "required" and not messages.get("required"):
            message = err.message.replace("is a required property", "is required")
        problems.append({"pointer": where, "message": message})
    return problems


def _name_problems(name: str, where: str, kind: str) -> list[Problem]:
    """Problems of a `path` or `pattern` as a name relative to the run folder."""
    problems: list[Problem] = []

    def add(message: str) -> None:
        problems.append({"pointer": where, "message": message})

    if name.startswith("/"):
        add(f"{kind} {name!r} is absolute: write it relative to the run folder (no leading '/')")
        return problems
    segments = name.split("/")
    if ".." in segments:
        add(f"{kind} {name!r} has a '..' segment: outputs live inside the run folder")
    if "." in segments:
        add(f"{kind} {name!r} has a '.' segment: remove it")
    if "" in segments:
        add(f"{kind} {name!r} has an empty segment ('//' or a trailing '/'): remove it")
    if name == TALLY_FOLDER[:-1]:
        add(
            f"{kind} {name!r} is named like tally's reserved folder {TALLY_FOLDER!r}: an object "
            "beside that folder is ambiguous to tools that show the bucket as folders; "
            "rename the output"
        )
    elif name == TALLY_FOLDER:
        add(
            f"{kind} {name!r} is tally's reserved folder itself, not an object: "
            "tally keeps its own objects there; remove the entry"
        )
    elif name.startswith(TALLY_FOLDER):
        add(
            f"{kind} {name!r} is under {TALLY_FOLDER!r}, which tally reserves for its own "
            "objects: move the output out of it"
        )
    return problems


def _pattern_problems(pattern: str, where: str) -> tuple[list[Problem], re.Pattern[str] | None]:
    problems = _name_problems(pattern, where, "pattern")
    try:
        rx = compile_glob(pattern)
    except GlobError as exc:
        return [*problems, {"pointer": where, "message": f"invalid glob {pattern!r}: {exc}"}], None
    return problems, rx


def _semantic_problems(doc: Any) -> list[Problem]:
    """Checks JSON Schema cannot express; tolerant of documents that also fail the schema."""
    if not isinstance(doc, dict):
        return []
    problems: list[Problem] = []
    if doc.get("workflow") == RESERVED_WORKFLOW:
        problems.append(
            {
                "pointer": "/workflow",
                "message": f"workflow {RESERVED_WORKFLOW!r} is reserved: tally keeps its "
                f"bucket-level objects under {TALLY_FOLDER!r} at the bucket's root; "
                "choose another name",
            }
        )
    if not isinstance(doc.get("expected_outputs"), list):
        return problems
    seen: dict[tuple[str, str], int] = {}
    paths: dict[str, int] = {}
    globs: list[tuple[int, str, re.Pattern[str]]] = []
    for i, kind, name in _entry_names(doc):
        where = f"/expected_outputs/{i}/{kind}"
        if (kind, name) in seen:
            problems.append(
                {
                    "pointer": where,
                    "message": f"duplicate {kind} {name!r} (also entry {seen[kind, name]}): "
                    "list it once",
                }
            )
        seen.setdefault((kind, name), i)
        if kind == "path":
            problems += _name_problems(name, where, kind)
            paths.setdefault(name, i)
        else:
            found, rx = _pattern_problems(name, where)
            problems += found
            if rx is not None:
                globs.append((i, name, rx))
    # A path that a pattern also matches would count twice: completeness would be ambiguous.
    for path, i in paths.items():
        for j, pattern, rx in globs:
            if rx.match(path):
                problems.append(
                    {
                        "pointer": f"/expected_outputs/{i}/path",
                        "message": f"path {path!r} also matches pattern {pattern!r} (entry {j}): "
                        "an object may satisfy one entry only; narrow the pattern or drop the path",
                    }
                )
    return problems


def _entry_names(doc: dict[str, Any]) -> Iterator[tuple[int, str, str]]:
    """(index, "path" or "pattern", name) of each entry's non-empty string names."""
    for i, entry in enumerate(doc["expected_outputs"]):
        if isinstance(entry, dict):
            for kind in ("path", "pattern"):
                name = entry.get(kind)
                if isinstance(name, str) and name:
                    yield i, kind, name


def folder_problems(doc: Any, folder: RunFolder) -> list[Problem]:
    """Conflicts of a spec with the configured run folder: the manifest and failure marker
    names, and the bytes an object name has left for a path under the layout."""
    if not isinstance(doc, dict) or not isinstance(doc.get("expected_outputs"), list):
        return []
    workflow, version = doc.get("workflow"), doc.get("version")
    budget = None
    if (
        isinstance(workflow, str)
        and isinstance(version, str)
        and is_valid_name(workflow)
        and is_valid_name(version)
    ):
        budget = folder.layout.path_budget(workflow, version)
    reserved = (
        (folder.manifest_name, "the manifest tally writes in every run folder"),
        (folder.failure_marker, "the failure marker, not an output"),
    )
    problems: list[Problem] = []
    for i, kind, name in _entry_names(doc):
        where = f"/expected_outputs/{i}/{kind}"
        if kind == "path":
            problems += [
                {"pointer": where, "message": f"path {name!r} is {what}: rename the output"}
                for reserved_name, what in reserved
                if name == reserved_name
            ]
            least = len(name.encode())
        else:
            try:
                rx = compile_glob(name)
            except GlobError:
                continue  # reported by the semantic checks
            problems += [
                {
                    "pointer": where,
                    "message": f"pattern {name!r} matches {reserved_name!r}, {what}: "
                    "narrow the pattern",
                }
                for reserved_name, what in reserved
                if rx.match(reserved_name)
            ]
            least = min_match_bytes(name)
        if budget is not None and least > budget:
            what = "is" if kind == "path" else "matches only names of at least"
            problems.append(
                {
                    "pointer": where,
                    "message": f"{kind} {what} {least} UTF-8 bytes, but paths of {workflow} "
                    f"{version} fit in {budget}: object names are at most "
                    f"{MAX_OBJECT_NAME_BYTES:,} bytes and the run folder prefix takes "
                    f"{MAX_OBJECT_NAME_BYTES - budget} with a 1-byte run id (layout "
                    f"{folder.layout.template!r}); shorten the {kind}",
                }
            )
    return problems


def min_match_bytes(pattern: str) -> int:
    """UTF-8 bytes of the shortest path a valid glob matches: wildcards but `?` and classes
    (one character, at least one byte) may match nothing."""
    size, i = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            i += 3 if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/") else 1
            continue
        if c == "[":
            i = _compile_class(pattern, i, [])
        size += 1 if c in "?[" else len(c.encode())
        i += 1
    return size


def validate(doc: Any, folder: RunFolder | None = DEFAULT_FOLDER) -> list[Problem]:
    """Every problem of a spec document, sorted by pointer; empty when the spec is valid.

    `folder` adds the checks that depend on the configuration (`folder_problems`); None leaves
    them out, for a spec stored under an earlier configuration.
    """
    problems = _schema_problems(doc) + _semantic_problems(doc)
    if folder is not None:
        problems += folder_problems(doc, folder)
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in problems:
        key = (p["pointer"], p["message"])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return sort_problems(unique)


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """By JSON pointer, numeric segments as numbers; stable within one pointer."""
    return sorted(problems, key=lambda p: _pointer_key(p["pointer"]))


def _pointer_key(ptr: str) -> list[tuple[int, int, str]]:
    # Numeric segments sort as numbers: /expected_outputs/2 before /expected_outputs/10.
    return [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in ptr.split("/")[1:]]
