"""terraform/README.md: the Variables and Outputs tables are what tools/tfdoc.py generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.terraform.tfmodel import TF_DIR
from tools import tfdoc


def test_readme_tables_are_current() -> None:
    readme = (TF_DIR / "README.md").read_text(encoding="utf-8")
    expected = tfdoc.replace_between_markers(readme, tfdoc.render(TF_DIR))
    assert readme == expected, "stale tables: run `python tools/tfdoc.py terraform`"


def test_readme_documents_every_variable_and_output() -> None:
    readme = (TF_DIR / "README.md").read_text(encoding="utf-8")
    variables, outputs = tfdoc.parse_module(TF_DIR)
    for item in variables + outputs:
        assert f"| [{item.name}]({item.file}#L{item.line}) |" in readme, item.name
    assert "terraform init" in readme and "terraform plan" in readme and "terraform apply" in readme


def test_tfdoc_check_fails_on_stale_tables(tmp_path: Path) -> None:
    for path in TF_DIR.glob("*.tf"):
        shutil.copy(path, tmp_path)
    readme = (TF_DIR / "README.md").read_text(encoding="utf-8")
    (tmp_path / "README.md").write_text(readme)
    assert tfdoc.main([str(tmp_path), "--check"]) == 0
    with (tmp_path / "outputs.tf").open("a") as handle:
        handle.write('\noutput "zz_new" {\n  description = "New."\n  value       = 1\n}\n')
    assert tfdoc.main([str(tmp_path), "--check"]) == 1
    assert tfdoc.main([str(tmp_path)]) == 0  # rewrites
    assert "| [zz_new](outputs.tf#L" in (tmp_path / "README.md").read_text()
    assert tfdoc.main([str(tmp_path), "--check"]) == 0


def test_tfdoc_reads_source_text(tmp_path: Path) -> None:
    (tmp_path / "variables.tf").write_text(
        'variable "a" {\n'
        '  description = "A \\"quoted\\" value with {braces} and a | pipe."\n'
        '  type = object({\n    x = optional(string, "}")\n  })\n'
        "  default = {}\n"
        '  validation {\n    condition     = true\n    error_message = "Never."\n  }\n'
        "}\n"
        'variable "b" {\n  description = "B."\n  type        = string\n}\n'
    )
    variables, _ = tfdoc.parse_module(tmp_path)
    a, b = variables
    assert a.description == 'A "quoted" value with {braces} and a | pipe.'
    assert a.arguments["type"] == 'object({\n    x = optional(string, "}")\n  })'
    assert a.arguments["default"] == "{}" and not a.required
    assert b.required
    rendered = tfdoc.render(tmp_path)
    assert rendered.index("[b]") < rendered.index("[a]")  # required first
    assert "a \\| pipe" in rendered


def test_tfdoc_refuses_missing_markers(tmp_path: Path) -> None:
    with pytest.raises(tfdoc.TfdocError):
        tfdoc.replace_between_markers("no markers here", "x")
