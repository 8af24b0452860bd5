"""Read the Terraform root module for the offline checks, and the checkers the tests share.

HCL is read with the `hcl2` package. Two distributions install that import name:
python-hcl2 8.x (requirements-dev.txt) and bc-python-hcl2 0.4.x (a dependency of checkov, which
needs its own API). They write the same files, the one installed last wins, and they return
different shapes: 0.4 wraps every argument value in a one-element list (and writes `null` as
`None` inside expressions); 8.x keeps the quotes of strings and labels and marks blocks with
`__is_block__`. `parse_hcl` brings both to one shape:

- a body is a dict; an argument's value is a Python value, and an expression is a string
  `"${...}"` (compare expressions with `same_expr`, which ignores spacing);
- a nested block is a list of bodies, one per occurrence; `dynamic` is a list of
  `{name: body}`;
- an object value (`{ a = 1 }`) is a one-element list holding a dict, because 0.4 cannot tell
  it from a block: read it with `obj()`. (Limit: in 0.4, a one-element list inside an object value
  is unwrapped too.)
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
SCHEMA_FILE = Path(__file__).resolve().parent / "providers-schema.json"

# Terraform meta-arguments: no provider schema has them.
META_ARGUMENTS = frozenset(
    {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
)


class _ParserKeys:
    """Keys the parsers add (__start_line__, __is_block__, __comments__, ...), never HCL names."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith("__") and key.endswith("__")


_PARSER_KEYS = _ParserKeys()
_LABELS = {
    "resource": 2,
    "data": 2,
    "variable": 1,
    "output": 1,
    "provider": 1,
    "module": 1,
    "locals": 0,
    "terraform": 0,
    "check": 1,
    "moved": 0,
    "import": 0,
}
# Lines the conftest prints in pytest's terminal summary.
SUMMARY: list[str] = []

PROVIDER_ADDRESSES = {
    "archive": "registry.terraform.io/hashicorp/archive",
    "google": "registry.terraform.io/hashicorp/google",
    "google-beta": "registry.terraform.io/hashicorp/google-beta",
    "random": "registry.terraform.io/hashicorp/random",
}


# --- parsing --------------------------------------------------------------------------------------


@cache
def hcl2_shape() -> str:
    """'wrapped' (bc-python-hcl2 0.4) or 'quoted' (python-hcl2 8.x)."""
    return "wrapped" if hcl2.loads("a = 1\n") == {"a": [1]} else "quoted"


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text[1:-1]
    return text


def _norm_wrapped_body(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _PARSER_KEYS:
            continue
        if key == "dynamic":
            out[key] = [
                {name: _norm_wrapped_body(dyn_body) for name, dyn_body in entry.items()}
                for entry in value
            ]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out[key] = [_norm_wrapped_body(v) for v in value]
        elif isinstance(value, list) and len(value) == 1:
            out[key] = _norm_wrapped_value(value[0])
        else:
            out[key] = _norm_wrapped_value(value)
    return out


def _norm_wrapped_value(value: Any) -> Any:
    if isinstance(value, dict):
        return [_norm_wrapped_body(value)]
    if isinstance(value, list):
        return [_norm_wrapped_value(v) for v in value]
    return value


def _norm_quoted_body(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _PARSER_KEYS:
            continue
        name = _unquote(key)
        if name == "dynamic":
            out[name] = [
                {_unquote(label): _norm_quoted_body(dyn) for label, dyn in entry.items()}
                for entry in value
            ]
        else:
            out[name] = _norm_quoted_value(value)
    return out


def _norm_quoted_value(value: Any) -> Any:
    if isinstance(value, list):
        if value and all(isinstance(v, dict) and v.get("__is_block__") for v in value):
            return [_norm_quoted_body(v) for v in value]
        return [_norm_quoted_value(v) for v in value]
    if isinstance(value, dict):
        return [_norm_quoted_body(value)]
    if isinstance(value, str):
        return _unquote(value)
    return value


@dataclass(frozen=True)
class Block:
    """A top-level block: `resource "type" "name" { ... }` is kind resource, labels (type, name)."""

    kind: str
    labels: tuple[str, ...]
    body: dict[str, Any]
    file: str

    @property
    def address(self) -> str:
        if self.kind == "resource":
            return ".".join(self.labels)
        return ".".join((self.kind, *self.labels))


def parse_hcl(text: str, file: str = "<text>") -> list[Block]:
    """Top-level blocks of one file, normalized (see the module docstring)."""
    doc = hcl2.loads(text)
    quoted = hcl2_shape() == "quoted"
    norm_body = _norm_quoted_body if quoted else _norm_wrapped_body
    blocks: list[Block] = []
    for kind, entries in doc.items():
        if kind in _PARSER_KEYS:
            continue
        count = _LABELS.get(_unquote(kind))
        if count is None:
            raise ValueError(f"{file}: unknown top-level block {kind!r}")
        for entry in entries:
            _collect(_unquote(kind), entry, count, (), file, norm_body, blocks)
    return blocks


def _collect(kind, node, remaining, labels, file, norm_body, out) -> None:
    if remaining == 0:
        out.append(Block(kind, labels, norm_body(node), file))
        return
    for label, child in node.items():
        if label in _PARSER_KEYS:
            continue
        _collect(kind, child, remaining - 1, (*labels, _unquote(label)), file, norm_body, out)


@dataclass
class Module:
    """Every top-level block of the .tf files of one directory."""

    blocks: list[Block] = field(default_factory=list)

    def of(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]

    def resource(self, type_: str, name: str) -> dict[str, Any]:
        for b in self.of("resource"):
            if b.labels == (type_, name):
                return b.body
        raise KeyError(f"{type_}.{name}")

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {b.labels[1]: b.body for b in self.of("resource") if b.labels[0] == type_}

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {b.labels[0]: b.body for b in self.of("variable")}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {b.labels[0]: b.body for b in self.of("output")}

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for b in self.of("locals"):
            merged.update(b.body)
        return merged


def load_module(directory: Path = TF_DIR) -> Module:
    blocks: list[Block] = []
    for path in sorted(directory.glob("*.tf")):
        blocks += parse_hcl(path.read_text(encoding="utf-8"), path.name)
    return Module(blocks)


def module_from_text(text: str) -> Module:
    return Module(parse_hcl(text))


# --- values and expressions -----------------------------------------------------------------------


def obj(value: Any) -> dict[str, Any]:
    """An object value ({ a = 1 }), whatever the parser made of it."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        return value[0]
    if isinstance(value, dict):
        return value
    raise TypeError(f"not an object value: {value!r}")


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a body."""
    blocks = body.get(name)
    if not isinstance(blocks, list) or len(blocks) != 1:
        raise KeyError(f"expected one {name!r} block, found {blocks!r}")
    return blocks[0]


def same_expr(value: Any, expected: str) -> bool:
    """Whether `value` is the expression `expected` (spacing and `null`/`None` ignored)."""
    if not isinstance(value, str):
        return False

    def canon(text: str) -> str:
        return re.sub(r"\s+", "", text).replace("None", "null")

    return canon(value) == canon(expected)


def strings(value: Any) -> Iterator[str]:
    """Every string inside a value (keys of object values included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def interpolations(text: str) -> list[str]:
    """The expressions inside the `${...}` of a string (`$${` is a literal, not one)."""
    found: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            i += 3
            continue
        if text.startswith("${", i):
            depth, j, quote = 1, i + 2, False
            while j < len(text) and depth:
                char = text[j]
                if quote:
                    if char == "\\":
                        j += 1
                    elif char == '"':
                        quote = False
                elif char == '"':
                    quote = True
                elif char == "{":
                    depth += 1
                elif char == "}":
                    depth -= 1
                j += 1
            found.append(text[i + 2 : j - 1])
            i = j
            continue
        i += 1
    return found


_REF_PATTERNS = {
    "var": re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)"),
    "local": re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)"),
    "data": re.compile(r"(?<![\w.])data\.([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)"),
    "module": re.compile(r"(?<![\w.])module\.([A-Za-z_][\w-]*)"),
    "resource": re.compile(
        r"(?<![\w.])((?:google|google-beta|archive|random)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)"
    ),
}


def references(value: Any) -> set[str]:
    """References in the expressions of a value: `var.x`, `local.x`, `data.t.n`, `t.n`."""
    refs: set[str] = set()
    for text in strings(value):
        for expr in interpolations(text):
            for kind, pattern in _REF_PATTERNS.items():
                for match in pattern.finditer(expr):
                    if kind == "resource":
                        refs.add(f"{match.group(1)}.{match.group(2)}")
                    elif kind == "data":
                        refs.add(f"data.{match.group(1)}.{match.group(2)}")
                    else:
                        refs.add(f"{kind}.{match.group(1)}")
    return refs


def unresolved_references(module: Module) -> list[str]:
    """References that name nothing declared in the module, as 'address: reference'."""
    declared = {f"var.{n}" for n in module.variables}
    declared |= {f"local.{n}" for n in module.locals}
    declared |= {b.address for b in module.of("resource")}
    declared |= {b.address for b in module.of("data")}
    declared |= {b.address for b in module.of("module")}
    problems = []
    for b in module.blocks:
        if b.kind == "locals":
            for name, value in b.body.items():
                problems += [f"local.{name}: {r}" for r in sorted(references(value) - declared)]
        else:
            problems += [f"{b.address}: {r}" for r in sorted(references(b.body) - declared)]
    return problems


_ATTRIBUTE_REF = re.compile(
    r"(?<![\w.])(data\.)?((?:google|google-beta|archive|random)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)"
    r"(?:\[[^\]]*\])?\.([A-Za-z_]\w*)"
)


def unknown_attributes(module: Module) -> list[str]:
    """References to an attribute the provider schema does not have (`google_x.y.urll`)."""
    problems = []
    for b in module.blocks:
        for text in strings(b.body):
            for expr in interpolations(text):
                for match in _ATTRIBUTE_REF.finditer(expr):
                    data, type_, name, attribute = match.groups()
                    section = "data_source_schemas" if data else "resource_schemas"
                    block_ = _type_schema(section, type_)
                    known = {**block_.get("attributes", {}), **block_.get("block_types", {})}
                    if attribute not in known:
                        ref = f"{data or ''}{type_}.{name}.{attribute}"
                        problems.append(f"{b.address}: {ref}{_hint(attribute, known)}")
    return problems


# --- provider schema ------------------------------------------------------------------------------


def _type_schema(section: str, type_: str) -> dict[str, Any]:
    """A type's block schema; google_ types may live in google-beta only."""
    prefix = type_.split("_", maxsplit=1)[0]
    candidates = [PROVIDER_ADDRESSES[prefix]]
    if prefix == "google":
        candidates.append(PROVIDER_ADDRESSES["google-beta"])
    for address in candidates:
        found = provider_schemas().get(address, {}).get(section, {}).get(type_)
        if found:
            return found["block"]
    return {}


@cache
def provider_schemas() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["provider_schemas"]


@dataclass
class SchemaReport:
    errors: list[str] = field(default_factory=list)
    arguments: int = 0
    blocks: int = 0
    configuration_blocks: int = 0
    types: set[str] = field(default_factory=set)


def _provider_of(type_: str, body: dict[str, Any]) -> str:
    explicit = body.get("provider")
    if isinstance(explicit, str):
        return explicit.strip("${}").split(".")[0]
    return type_.split("_", 1)[0]


def check_against_schema(module: Module, report: SchemaReport | None = None) -> SchemaReport:
    """Every resource and data block against the provider schemas (see the schema README)."""
    report = report or SchemaReport()
    for b in module.blocks:
        if b.kind not in ("resource", "data"):
            continue
        type_ = b.labels[0]
        provider = _provider_of(type_, b.body)
        section = "resource_schemas" if b.kind == "resource" else "data_source_schemas"
        schema = provider_schemas().get(PROVIDER_ADDRESSES.get(provider, provider), {})
        type_schema = schema.get(section, {}).get(type_)
        if type_schema is None:
            report.errors.append(f"{b.address}: no {section[:-8]} type {type_!r} in {provider!r}")
            continue
        report.configuration_blocks += 1
        report.types.add(f"{b.kind} {type_}")
        _check_body(type_schema["block"], b.body, b.address, report, top=True)
    return report


def _check_body(schema: dict, body: dict, where: str, report: SchemaReport, top: bool) -> None:
    attributes = schema.get("attributes", {})
    block_types = schema.get("block_types", {})
    present = set(body)
    for key, value in body.items():
        if top and key in META_ARGUMENTS:
            continue
        if key == "dynamic":
            for entry in value:
                for name, dyn_body in entry.items():
                    present.add(name)
                    if name not in block_types:
                        hint = _hint(name, block_types)
                        report.errors.append(f"{where}: dynamic {name!r} is not a block type{hint}")
                        continue
                    report.blocks += 1
                    extra = set(dyn_body) - {"for_each", "content", "iterator", "labels"}
                    if extra:
                        report.errors.append(f"{where}.{name}: dynamic has {sorted(extra)}")
                    for content in dyn_body.get("content", []):
                        _check_body(
                            block_types[name]["block"], content, f"{where}.{name}", report, False
                        )
            continue
        if key in attributes:
            report.arguments += 1
            spec = attributes[key]
            if spec.get("computed") and not (spec.get("optional") or spec.get("required")):
                report.errors.append(f"{where}: {key!r} is computed only, it cannot be set")
            if spec.get("deprecated"):
                report.errors.append(f"{where}: {key!r} is deprecated")
        elif key in block_types:
            report.blocks += 1
            spec = block_types[key]
            if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                report.errors.append(f"{where}: {key!r} is a block, not an argument")
                continue
            if spec.get("max_items") and len(value) > spec["max_items"]:
                report.errors.append(f"{where}: more than {spec['max_items']} {key!r} blocks")
            for nested in value:
                _check_body(spec["block"], nested, f"{where}.{key}", report, False)
        else:
            known = {**attributes, **block_types}
            report.errors.append(f"{where}: unknown argument or block {key!r}{_hint(key, known)}")
    for name, spec in attributes.items():
        if spec.get("required") and name not in present:
            report.errors.append(f"{where}: required argument {name!r} is missing")
    for name, spec in block_types.items():
        if (spec.get("min_items") or 0) > 0 and name not in present:
            report.errors.append(f"{where}: required block {name!r} is missing")


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- function sources -----------------------------------------------------------------------------


def doublestar_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a bmatcuk/doublestar pattern, as archive_file's `excludes` match paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out += "(?:/.*)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        else:
            char = pattern[i]
            if char == "*":
                out += "[^/]*"
            elif char == "?":
                out += "[^/]"
            elif char == "{":
                end = pattern.index("}", i)
                alternatives = pattern[i + 1 : end].split(",")
                out += (
                    "(?:" + "|".join(doublestar_regex(a).pattern[1:-1] for a in alternatives) + ")"
                )
                i = end
            elif char == "[":
                end = pattern.index("]", i)
                out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
                i = end
            elif char == "\\" and i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            else:
                out += re.escape(char)
            i += 1
    return re.compile("^" + out + "$")


def archive_members(source_dir: Path, excludes: Iterable[str]) -> list[str]:
    """What archive_file puts in the zip of `source_dir`: a walk that skips every file and
    directory whose path (relative, slash-separated) matches an exclude."""
    patterns = [doublestar_regex(p) for p in excludes if p]

    def excluded(rel: str) -> bool:
        return any(p.match(rel) for p in patterns)

    members: list[str] = []
    for root, dirs, files in os.walk(source_dir):
        rel_root = Path(root).relative_to(source_dir).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(prefix + d))
        members += [prefix + f for f in sorted(files) if not excluded(prefix + f)]
    return sorted(members)


ENV_NAME = re.compile(r"TALLY_[A-Z0-9_]+")
# A mapping passed around in place of os.environ (`env`, `environ`, `self.env`, ...).
_ENV_MAPPING = re.compile(r"(?:[\w.]*\.)?(?:env|environ|environment)")
_ENV_MAPPING_GET = re.compile(r"(?:[\w.]*\.)?(?:env|environ|environment)\.get")
_ENV_KEY = re.compile(r"[A-Z][A-Z0-9_]*")


def env_vars_read(sources: dict[str, str]) -> set[str]:
    """Environment variables Python sources read: every string literal that is a whole
    `TALLY_...` name (but the names of ``__all__``), and every literal key of os.environ[...] /
    .get(...) / os.getenv(...) or of a mapping named env / environ standing in for os.environ.
    (A name built at run time, e.g. f"TALLY_{x}", is not seen: keep variable names whole
    literals.)"""
    names: set[str] = set()
    for path, text in sources.items():
        tree = ast.parse(text, filename=path)
        exported = {  # __all__ names Python constants (TALLY_FOLDER), not variables
            id(item)
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for item in ast.walk(node.value)
        }
        for node in ast.walk(tree):
            if id(node) in exported:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.fullmatch(node.value):
                    names.add(node.value)
            elif isinstance(node, ast.Call) and node.args:
                func = ast.unparse(node.func)
                key = node.args[0]
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    continue
                if func.endswith(("environ.get", "getenv", "environ.setdefault")) or (
                    _ENV_MAPPING_GET.fullmatch(func) and _ENV_KEY.fullmatch(key.value)
                ):
                    names.add(key.value)
            elif isinstance(node, ast.Subscript):
                key = node.slice
                mapping = ast.unparse(node.value)
                if _ENV_MAPPING.fullmatch(mapping) and isinstance(key, ast.Constant):
                    names.add(str(key.value))
    return names


@dataclass(frozen=True)
class ImportProblem:
    file: str
    module: str
    reason: str


def import_problems(function_dir: Path, members: list[str]) -> list[ImportProblem]:
    """Imports of the archived Python files that the deployed function could not satisfy: a local
    module left out of the archive, or a third-party package its requirements.txt does not bring."""
    member_set = set(members)
    provided, not_installed = _importable_from_requirements(function_dir / "requirements.txt")
    stdlib = set(sys.stdlib_module_names)
    problems = [
        ImportProblem("requirements.txt", name, "not installed: the check needs `make install`")
        for name in not_installed
    ]
    for member in members:
        if not member.endswith(".py"):
            continue
        tree = ast.parse((function_dir / member).read_text(encoding="utf-8"), filename=member)
        package = member.rsplit("/", 1)[0].split("/") if "/" in member else []
        for node in ast.walk(tree):
            for name in _imported_modules(node, package):
                parts = name.split(".")
                if _is_local(function_dir, parts[0]):
                    missing = _local_module_missing(function_dir, parts, member_set)
                    if missing:
                        problems.append(
                            ImportProblem(member, name, f"{missing} is not in the archive")
                        )
                elif parts[0] not in stdlib and parts[0] not in provided:
                    problems.append(ImportProblem(member, name, "no requirement provides it"))
    return problems


def _imported_modules(node: ast.AST, package: list[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            prefix = ".".join(base)
            module = ".".join(p for p in (prefix, node.module or "") if p)
            # `from . import x` may import submodule x.
            return [f"{module}.{a.name}" if module else a.name for a in node.names]
        # `from pkg import x`: x may be a submodule; a plain attribute resolves to pkg itself.
        return [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
    return []


def _is_local(function_dir: Path, top: str) -> bool:
    return (function_dir / f"{top}.py").is_file() or (function_dir / top).is_dir()


def _local_module_missing(function_dir: Path, parts: list[str], members: set[str]) -> str | None:
    """The file a local import needs that the archive lacks (None when it is there, or when the
    name is an attribute of a module rather than a submodule)."""
    for depth in range(len(parts), 0, -1):
        stem = "/".join(parts[:depth])
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            if (function_dir / candidate).is_file():
                return None if candidate in members else candidate
        if (function_dir / stem).is_dir():
            return None  # a namespace package directory
    return "/".join(parts) + ".py"


def _importable_from_requirements(requirements: Path) -> tuple[set[str], list[str]]:
    """Top-level import names provided by the requirements and their dependencies (read from the
    installed distributions' metadata; the dev virtualenv installs both functions' requirements)."""
    from importlib import metadata

    def canon(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted: list[str] = []
    if requirements.is_file():
        for raw in requirements.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                wanted.append(canon(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    listed, seen, not_installed = set(wanted), set(), []
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            if name in listed:
                not_installed.append(name)
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            wanted.append(canon(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]))
    provided: set[str] = set()
    for top, dists in metadata.packages_distributions().items():
        if any(canon(d) in seen for d in dists):
            provided.add(top)
    return provided, sorted(not_installed)
