"""tally_cli.resources derives resource names as terraform/main.tf's locals do, for any prefix."""

from __future__ import annotations

import re

import pytest

from tally_cli.resources import DEFAULT_DATASET, DEFAULT_PREFIX, PREFIX_PATTERN, ResourceNames
from tests.terraform import tfmodel
from tests.terraform.tfmodel import obj

# ResourceNames attribute -> (resource type, resource name, the argument holding its name).
MIRRORED = {
    "outputs_bucket": ("google_storage_bucket", "outputs", "name"),
    "registry_bucket": ("google_storage_bucket", "registry", "name"),
    "sources_bucket": ("google_storage_bucket", "sources", "name"),
    "object_events_topic": ("google_pubsub_topic", "object_events", "name"),
    "completions_topic": ("google_pubsub_topic", "run_completions", "name"),
    "dead_letter_topic": ("google_pubsub_topic", "dead_letter", "name"),
    "push_subscription": ("google_pubsub_subscription", "event_handler", "name"),
    "dead_letter_subscription": ("google_pubsub_subscription", "dead_letter", "name"),
    "check_subscription": ("google_pubsub_subscription", "check", "name"),
    "event_handler_function": ("google_cloudfunctions2_function", "event_handler", "name"),
    "registry_function": ("google_cloudfunctions2_function", "registry", "name"),
}
# The outputs bucket is Terraform's default name while `outputs_bucket.name` is unset (null).
_COALESCE = re.compile(r'^\$\{coalesce\(var\.outputs_bucket\.name,\s*"(.*)"\)\}$')


def evaluate(module: tfmodel.Module, text: str, project: str, prefix: str) -> str:
    """A name expression of the module: `${local.names.x}`, `${local.bucket_names.x}`, string
    templates over var.project_id and var.prefix, and the outputs bucket's coalesce."""
    ref = re.fullmatch(r"\$\{local\.(names|bucket_names)\.(\w+)\}", text)
    if ref:
        text = obj(module.locals[ref.group(1)])[ref.group(2)]
    coalesce = _COALESCE.match(text)
    if coalesce:
        text = coalesce.group(1)
    text = text.replace("${var.project_id}", project).replace("${var.prefix}", prefix)
    assert "${" not in text, f"cannot evaluate {text!r}: extend evaluate()"
    return text


@pytest.mark.parametrize(("project", "prefix"), [("my-project", "tally"), ("p-123456", "x9-b")])
def test_names_follow_terraforms_prefix_rule(
    module: tfmodel.Module, project: str, prefix: str
) -> None:
    names = ResourceNames(project, prefix)
    for attribute, (type_, name, argument) in MIRRORED.items():
        expression = module.resource(type_, name)[argument]
        assert getattr(names, attribute) == evaluate(module, expression, project, prefix), (
            f"{attribute}: tally_cli/resources.py and {type_}.{name} disagree"
        )


def test_bigquery_names(module: tfmodel.Module) -> None:
    type_ = module.variables["bigquery"]["type"]
    default = re.search(r"dataset_id\W+\$\{optional\(string,\s*\"(\w+)\"\)", type_)
    assert default and default.group(1) == DEFAULT_DATASET, type_
    dataset = module.resource("google_bigquery_dataset", "tally")["dataset_id"]
    assert dataset == "${var.bigquery.dataset_id}"  # not prefixed
    names = ResourceNames("p", dataset="d")
    for table in ("events", "runs"):
        assert module.resource("google_bigquery_table", table)["table_id"] == table
        assert getattr(names, f"{table}_table") == f"p.d.{table}"
    assert tfmodel.same_expr(
        module.locals["dataset_ref"], "${var.project_id}.${var.bigquery.dataset_id}"
    )


def test_the_prefix_rule_is_terraforms_validation(module: tfmodel.Module) -> None:
    prefix = module.variables["prefix"]
    assert prefix["default"] == DEFAULT_PREFIX
    condition = prefix["validation"][0]["condition"]
    pattern = re.search(r'regex\("(.+)",\s*var\.prefix\)', condition)
    assert pattern and pattern.group(1) == PREFIX_PATTERN, condition
    with pytest.raises(ValueError, match="prefix 'Tally-' is invalid"):
        ResourceNames("p", "Tally-")
