"""Generate the Variables and Outputs tables of a Terraform module's README.

    python tools/tfdoc.py terraform          # rewrite terraform/README.md between the markers
    python tools/tfdoc.py terraform --check  # exit 1 (and print a diff) when the tables are stale

The tables go between `<!-- BEGIN TFDOC -->` and `<!-- END TFDOC -->`, in the manner of
cloud-foundation-fabric's tfdoc: required variables first, then alphabetical, each name linked to
its `file#line`. The HCL is read as source text, not evaluated, so a type or a default appears
exactly as written; the reader relies on `terraform fmt` layout (top-level blocks start in column
0, their arguments are indented by two spaces), which the Terraform tests enforce.
"""

from __future__ import annotations

import argparse
import difflib
import html
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

BEGIN = "<!-- BEGIN TFDOC -->"
END = "<!-- END TFDOC -->"

_BLOCK_START = re.compile(r'^(variable|output)\s+"([^"]+)"\s*\{\s*$')
_ARGUMENT = re.compile(r"^  ([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(.*)$")
_NESTED_BLOCK = re.compile(r"^  [A-Za-z_][A-Za-z0-9_-]*(\s+\"[^\"]*\")*\s*\{\s*$")


class TfdocError(Exception):
    """The module's source cannot be read the way tfdoc expects (the message says where)."""


@dataclass
class Item:
    """One variable or output: its location and its arguments as source text."""

    kind: str
    name: str
    file: str
    line: int
    arguments: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        raw = self.arguments.get("description")
        return "" if raw is None else hcl_string(raw)

    @property
    def required(self) -> bool:
        return self.kind == "variable" and "default" not in self.arguments


def hcl_string(raw: str) -> str:
    """The value of a quoted HCL string literal (HCL escapes are JSON's for what tally uses)."""
    raw = raw.strip()
    if not (raw.startswith('"') and raw.endswith('"')):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw[1:-1]


def bracket_depth(text: str, depth: int = 0) -> int:
    """Depth of ( [ { after `text`, outside strings and comments; quotes inside `${...}` count."""
    stack: list[str] = ["code"] * depth
    i = 0
    while i < len(text):
        char = text[i]
        context = stack[-1] if stack else "code"
        if context == "string":
            if char == "\\" or text.startswith(("$${", "%%{"), i):
                i += 2 if char == "\\" else 3
                continue
            if char == '"':
                stack.pop()
            elif text.startswith(("${", "%{"), i):
                stack.append("interp")
                i += 1
        elif char == '"':
            stack.append("string")
        elif char in "([{":
            stack.append("code")
        elif char in ")]}" and stack:
            stack.pop()
        elif char == "#" or text.startswith("//", i):
            break
        i += 1
    return sum(1 for s in stack if s != "string")


def parse_file(path: Path) -> list[Item]:
    """The variable and output blocks of one file."""
    items: list[Item] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    current: Item | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if current is None:
            match = _BLOCK_START.match(line)
            if match:
                current = Item(match.group(1), match.group(2), path.name, i + 1)
            i += 1
            continue
        if line.startswith("}"):
            items.append(current)
            current = None
            i += 1
            continue
        if _NESTED_BLOCK.match(line):
            # validation { ... } and similar: skip to the block's closing brace.
            depth = bracket_depth(line)
            while depth > 0:
                i += 1
                depth = bracket_depth(lines[i], depth)
            i += 1
            continue
        match = _ARGUMENT.match(line)
        if match:
            name, value = match.group(1), match.group(2)
            parts = [value]
            depth = bracket_depth(value)
            while depth > 0:
                i += 1
                parts.append(lines[i])
                depth = bracket_depth(lines[i], depth)
            current.arguments[name] = "\n".join(parts)
        elif line.strip() and not line.strip().startswith(("#", "//")):
            raise TfdocError(
                f"{path.name}:{i + 1}: unexpected line in {current.kind} {current.name!r}"
            )
        i += 1
    if current is not None:
        raise TfdocError(f"{path.name}: {current.kind} {current.name!r} is not closed")
    return items


def parse_module(module_dir: Path) -> tuple[list[Item], list[Item]]:
    """Variables and outputs of every .tf file of a module directory."""
    items = [item for path in sorted(module_dir.glob("*.tf")) for item in parse_file(path)]
    return (
        [item for item in items if item.kind == "variable"],
        [item for item in items if item.kind == "output"],
    )


def _code(text: str) -> str:
    """Source text as a table cell: one line shown, the whole text in the hover title."""
    text = text.strip()
    lines = [line.strip() for line in text.splitlines()]
    shown = lines[0] + ("…" + lines[-1] if len(lines) > 1 else "")
    shown = html.escape(shown).replace("|", "&#124;")
    if len(lines) == 1:
        return f"<code>{shown}</code>"
    title = html.escape(re.sub(r"\s+", " ", text)).replace("|", "&#124;")
    return f'<code title="{title}">{shown}</code>'


def _cell(text: str) -> str:
    """Prose as a table cell: `<workflow>` must stay text, not become an HTML tag."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def render(module_dir: Path) -> str:
    """The Markdown that goes between the markers."""
    variables, outputs = parse_module(module_dir)
    variables.sort(key=lambda item: (not item.required, item.name))
    outputs.sort(key=lambda item: item.name)
    lines = [
        "## Variables",
        "",
        "| name | description | type | required | default |",
        "|---|---|:---:|:---:|:---:|",
    ]
    for item in variables:
        type_cell = _code(item.arguments["type"]) if "type" in item.arguments else ""
        default = item.arguments.get("default")
        default_cell = "" if default is None else _code(default)
        lines.append(
            f"| [{item.name}]({item.file}#L{item.line}) | {_cell(item.description)} | "
            f"{type_cell} | {'✓' if item.required else ''} | {default_cell} |"
        )
    lines += ["", "## Outputs", "", "| name | description | sensitive |", "|---|---|:---:|"]
    for item in outputs:
        sensitive = item.arguments.get("sensitive", "").strip() == "true"
        lines.append(
            f"| [{item.name}]({item.file}#L{item.line}) | {_cell(item.description)} | "
            f"{'✓' if sensitive else ''} |"
        )
    return "\n".join(lines) + "\n"


def replace_between_markers(readme: str, doc: str) -> str:
    """The README with `doc` between the markers (which must each appear once, in order)."""
    if (
        readme.count(BEGIN) != 1
        or readme.count(END) != 1
        or readme.index(BEGIN) > readme.index(END)
    ):
        raise TfdocError(f"the README needs exactly one {BEGIN} followed by one {END}")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{doc}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module_dir", type=Path, help="directory of the Terraform module")
    parser.add_argument(
        "--readme", type=Path, help="README to update (default: MODULE_DIR/README.md)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the tables are current"
    )
    args = parser.parse_args(argv)
    readme_path = args.readme or args.module_dir / "README.md"
    try:
        current = readme_path.read_text(encoding="utf-8")
        updated = replace_between_markers(current, render(args.module_dir))
    except (OSError, TfdocError) as exc:
        print(f"tfdoc: {exc}", file=sys.stderr)
        return 2
    if updated == current:
        return 0
    if args.check:
        diff = difflib.unified_diff(
            current.splitlines(), updated.splitlines(), str(readme_path), "generated", lineterm=""
        )
        print("\n".join(diff))
        print(f"tfdoc: {readme_path} is stale; run: python tools/tfdoc.py {args.module_dir}")
        return 1
    readme_path.write_text(updated, encoding="utf-8")
    print(f"tfdoc: updated {readme_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
