"""The settings tables of the event handler, the registry and the CLI: one shape, each the table
of its docs/design.md section, and the local platform and the CLI build environments from them."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from tally_handler import adapters
from tally_handler import config as handler
from tally_registry import config as registry

from tally_cli import config as cli

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
TABLES = {
    "### Event handler": handler.SETTINGS,
    "### Registry": registry.SETTINGS,
    "### Command line": cli.SETTINGS,
}
TABLE_IDS = [heading.removeprefix("### ") for heading in TABLES]


def documented(heading: str) -> dict[str, tuple[str, str]]:
    """variable -> (required column, default column) of a Configuration table of the design."""
    section = DESIGN.read_text(encoding="utf-8").split(heading, 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|([^|]*)\|([^|]*)\|", section, re.MULTILINE)
    return {name: (required.strip(), default.strip()) for name, required, default in rows}


@pytest.mark.parametrize("settings", TABLES.values(), ids=TABLE_IDS)
def test_every_table_has_one_shape(settings: tuple[Any, ...]) -> None:
    shape = [f.name for f in dataclasses.fields(handler.SETTINGS[0])]
    assert [f.name for f in dataclasses.fields(settings[0])] == shape
    for setting in settings:
        assert callable(setting.parse), setting.env
        if setting.default is not None:
            setting.parse(setting.default)  # every default is a valid value


@pytest.mark.parametrize(("heading", "settings"), TABLES.items(), ids=TABLE_IDS)
def test_every_table_is_its_design_table(heading: str, settings: tuple[Any, ...]) -> None:
    table = documented(heading)
    assert table, f"no variable table under {heading!r} in docs/design.md"
    read = {setting.env: setting for setting in settings}
    assert set(read) - {handler.FAULTS} == set(table)  # TALLY_FAULTS: test-only, in the prose
    for name, (required, default) in table.items():
        setting = read[name]
        assert (required == "yes") == (setting.default is None and heading != "### Command line")
        if not default:
            assert setting.default is None, f"{name}: the design gives no default"
        elif default.startswith("empty"):
            assert setting.default == "", name
        elif default.startswith("`"):
            assert setting.default == default.strip("`"), name
        else:  # a default the design names in words (Google's certificates URL)
            assert setting.default, name


def test_variables_shared_by_the_functions_and_the_cli_have_one_default() -> None:
    """Terraform sets the run folder alike on both functions; the CLI reads it as they do."""
    run_folder = (handler.LAYOUT, handler.MANIFEST_NAME, handler.FAILURE_MARKER)
    for settings in (registry.SETTINGS, cli.SETTINGS):
        defaults = {s.env: s.default for s in settings}
        assert [defaults[name] for name in run_folder] == [
            s.default for s in handler.SETTINGS if s.env in run_folder
        ]


def test_handler_variables_are_the_handlers_constants() -> None:
    assert cli.LAYOUT is handler.LAYOUT and cli.PROJECT is handler.PROJECT
    assert cli.BIGQUERY_ENDPOINT is adapters.BIGQUERY_ENDPOINT
    for name in ("PROJECT", "OBJECT_EVENTS_TOPIC", "LAYOUT", "MANIFEST_NAME", "FAILURE_MARKER"):
        assert getattr(registry, name) == getattr(handler, name)


def test_cli_settings_defaults_are_its_table() -> None:
    settings = cli.Settings()
    for setting in cli.SETTINGS:
        assert getattr(settings, setting.field) == setting.default, setting.field


def variable_literals(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names
    ]


def test_the_cli_and_devstack_never_retype_a_variable_name() -> None:
    """They build environments from the tables' constants (one place per name)."""
    names = {s.env for table in TABLES.values() for s in table}
    declared = {ROOT / "tally_cli" / "config.py"}  # the CLI's own variables are declared there
    files = sorted((ROOT / "tally_cli").glob("*.py")) + sorted((ROOT / "devstack").glob("*.py"))
    found = [hit for f in files if f not in declared for hit in variable_literals(f, names)]
    assert not found, "import the constant from the settings module instead:\n" + "\n".join(found)
