"""Every resource and data block against the provider schemas (providers-schema.json): each
argument and nested block exists, required arguments are set, computed-only attributes are not."""

from __future__ import annotations

import pytest

from tests.terraform import tfmodel
from tests.terraform.tfmodel import SUMMARY, check_against_schema, module_from_text


def test_every_block_matches_the_provider_schema(module: tfmodel.Module) -> None:
    report = check_against_schema(module)
    SUMMARY.append(
        f"provider schema: {report.arguments} arguments and {report.blocks} nested blocks checked "
        f"in {report.configuration_blocks} resource/data blocks of {len(report.types)} types"
    )
    assert not report.errors, "\n".join(report.errors)
    # Every resource and data block was found in the schema and checked.
    expected = len(module.of("resource")) + len(module.of("data"))
    assert report.configuration_blocks == expected
    assert report.arguments > 150, report.arguments


# --- the checker can fail -------------------------------------------------------------------------

CASES = [
    (
        'resource "google_storage_bucket" "b" {\n  name = "b"\n  locaton = "EU"\n}\n',
        ["unknown argument or block 'locaton' (did you mean 'location'?)", "'location' is missing"],
    ),
    (
        'resource "google_cloudfunctions2_function" "f" {\n'
        '  name     = "f"\n  location = "r"\n  url      = "https://x"\n}\n',
        ["'url' is computed only"],
    ),
    (
        'resource "google_pubsub_subscription" "s" {\n'
        '  name  = "s"\n  topic = "t"\n'
        '  push_config {\n    oidc_token {\n      audience = "a"\n    }\n  }\n}\n',
        ["push_config: required argument 'push_endpoint'", "oidc_token: required argument"],
    ),
    (
        'resource "google_storage_bucket" "b" {\n  name = "b"\n  location = "EU"\n'
        '  dynamic "lifecycle_rules" {\n    for_each = []\n    content {}\n  }\n'
        '  dynamic "lifecycle_rule" {\n    for_each = []\n    content {\n'
        '      action {\n        kind = "Delete"\n      }\n    }\n  }\n}\n',
        [
            "dynamic 'lifecycle_rules' is not a block type",
            "action: unknown argument or block 'kind'",
        ],
    ),
    (
        'resource "google_storage_bucket" "b" {\n  name = "b"\n  location = "EU"\n'
        "  versioning = true\n}\n",
        ["'versioning' is a block, not an argument"],
    ),
    (
        'data "archive_file" "a" {\n  type = "zip"\n  output_path = "x"\n  output_md5 = "y"\n}\n'
        'resource "google_project_service_identity" "p" {\n  service = "x"\n}\n',
        ["'output_md5' is computed only", "no resource type 'google_project_service_identity'"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_schema_checker_catches(text: str, expected: list[str]) -> None:
    errors = check_against_schema(module_from_text(text)).errors
    for message in expected:
        assert any(message in e for e in errors), (message, errors)


def test_schema_checker_accepts_meta_arguments_and_beta_provider() -> None:
    text = (
        'resource "google_project_service_identity" "p" {\n'
        '  provider = google-beta\n  count = 1\n  service = "pubsub.googleapis.com"\n'
        "  lifecycle {\n    prevent_destroy = true\n  }\n  depends_on = []\n}\n"
    )
    report = check_against_schema(module_from_text(text))
    assert not report.errors
    assert report.arguments == 1
