"""Wiring and contracts of terraform/, read with python-hcl2: environment variables against the
code and docs/design.md, BigQuery schemas, source archives, references, variables, IAM."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.terraform import tfmodel
from tests.terraform.tfmodel import (
    ROOT,
    TF_DIR,
    archive_members,
    block,
    env_vars_read,
    import_problems,
    interpolations,
    module_from_text,
    obj,
    references,
    same_expr,
    strings,
    unknown_attributes,
    unresolved_references,
)
from tools import tfdoc

DESIGN = ROOT / "docs" / "design.md"

# Test-only variables the brief names; docs/design.md must list at least these.
TEST_ONLY = {
    "TALLY_FAULTS",
    "STORAGE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "TALLY_BIGQUERY_ENDPOINT",
}
# Set by Cloud Run functions itself: code may read them, Terraform must not set them.
# Read by Google's client libraries too, as a fallback: code may read them, Terraform sets none.
CLIENT_LIBRARY_DEFAULTS = {"GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GCP_PROJECT"}
PLATFORM_PROVIDED = {
    "K_CONFIGURATION",
    "K_REVISION",
    "K_SERVICE",
    "PORT",
    "FUNCTION_TARGET",
    "FUNCTION_SIGNATURE_TYPE",
}


@dataclass(frozen=True)
class Function:
    key: str  # the key of local.function_dirs
    resource: str  # google_cloudfunctions2_function.<resource>
    directory: Path
    design_heading: str

    def body(self, module: tfmodel.Module) -> dict[str, Any]:
        return module.resource("google_cloudfunctions2_function", self.resource)

    def environment(self, module: tfmodel.Module) -> dict[str, Any]:
        return obj(block(self.body(module), "service_config")["environment_variables"])


FUNCTIONS = [
    Function(
        "event-handler", "event_handler", ROOT / "functions/event_handler", "### Event handler"
    ),
    Function("registry", "registry", ROOT / "functions/registry", "### Registry"),
]
BY_ID = pytest.mark.parametrize("function", FUNCTIONS, ids=[f.resource for f in FUNCTIONS])


def design_section(heading: str) -> str:
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def design_variables(heading: str) -> tuple[set[str], set[str]]:
    """(variables of the section's table, variables its Test-only line names)."""
    section = design_section(heading)
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, flags=re.MULTILINE))
    test_only: set[str] = set()
    for paragraph in section.split("\n\n"):
        if paragraph.strip().startswith("Test-only"):
            test_only |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", paragraph))
    return table, test_only


def excludes(module: tfmodel.Module) -> list[str]:
    return module.locals["function_source_excludes"]


def deployed_sources(module: tfmodel.Module, function: Function) -> dict[str, str]:
    members = archive_members(function.directory, excludes(module))
    return {
        m: (function.directory / m).read_text(encoding="utf-8")
        for m in members
        if m.endswith(".py")
    }


def require_code(function: Function) -> None:
    if not (function.directory / "main.py").is_file():
        pytest.skip(f"{function.directory.relative_to(ROOT)}/main.py is not written yet")


# --- environment variables ------------------------------------------------------------------------


@BY_ID
def test_environment_is_the_design_table(module: tfmodel.Module, function: Function) -> None:
    table, test_only = design_variables(function.design_heading)
    assert table, f"no variable table under {function.design_heading!r} in docs/design.md"
    configured = set(function.environment(module))
    assert configured == table, (
        f"docs/design.md's table lacks {sorted(configured - table)}; "
        f"Terraform lacks {sorted(table - configured)}"
    )
    assert not (table & (TEST_ONLY | test_only))


def test_design_lists_the_test_only_variables() -> None:
    _, handler_test_only = design_variables("### Event handler")
    assert handler_test_only >= TEST_ONLY


@BY_ID
def test_environment_is_what_the_code_reads(module: tfmodel.Module, function: Function) -> None:
    """Scans the deployed Python (the archive's .py files) for the variables it reads."""
    require_code(function)
    read = env_vars_read(deployed_sources(module, function))
    _, doc_test_only = design_variables("### Event handler")
    expected = read - TEST_ONLY - doc_test_only - PLATFORM_PROVIDED - CLIENT_LIBRARY_DEFAULTS
    configured = set(function.environment(module))
    assert configured == expected, (
        f"set by Terraform but never read: {sorted(configured - expected)}; "
        f"read but not set: {sorted(expected - configured)}"
    )


def test_no_test_only_variable_is_set(module: tfmodel.Module) -> None:
    text = "\n".join(p.read_text() for p in TF_DIR.glob("*.tf"))
    for name in TEST_ONLY | PLATFORM_PROVIDED | CLIENT_LIBRARY_DEFAULTS:
        assert not re.search(rf"\b{name}\b", text), name


def test_registry_url_and_audience(module: tfmodel.Module) -> None:
    handler = FUNCTIONS[0].environment(module)
    registry = FUNCTIONS[1].environment(module)
    assert same_expr(handler["TALLY_REGISTRY_URL"], "${local.registry_url}")
    assert same_expr(registry["TALLY_REGISTRY_AUDIENCE"], "${local.registry_url}")
    assert handler["TALLY_REGISTRY_AUTH"] == "id-token"
    assert same_expr(
        module.locals["registry_url"],
        "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.names.registry}",
    )
    assert same_expr(FUNCTIONS[1].body(module)["name"], "${local.names.registry}")
    assert same_expr(FUNCTIONS[1].body(module)["location"], "${var.region}")
    assert same_expr(FUNCTIONS[1].body(module)["project"], "${var.project_id}")


def test_handler_knows_the_subscription_dead_letter_limit(module: tfmodel.Module) -> None:
    subscription = module.resource("google_pubsub_subscription", "event_handler")
    limit = block(subscription, "dead_letter_policy")["max_delivery_attempts"]
    assert same_expr(limit, "${var.event_subscription.max_delivery_attempts}")
    env = FUNCTIONS[0].environment(module)
    assert same_expr(env["TALLY_MAX_DELIVERY_ATTEMPTS"], limit)


@BY_ID
def test_entry_point_runtime_and_no_trigger(module: tfmodel.Module, function: Function) -> None:
    body = function.body(module)
    build = block(body, "build_config")
    assert build["entry_point"] == "handle"
    assert same_expr(build["runtime"], "${var.runtime}")
    assert "event_trigger" not in body  # the push subscription calls the handler
    source = block(block(build, "source"), "storage_source")
    assert same_expr(
        source["object"],
        f'${{google_storage_bucket_object.function_sources["{function.key}"].name}}',
    )


# --- BigQuery -------------------------------------------------------------------------------------

TABLES = {"events": "received_time", "runs": "announced_time"}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_tables_use_the_code_schema_files(module: tfmodel.Module, table: str) -> None:
    body = module.resource("google_bigquery_table", table)
    schema_path = f"functions/event_handler/schemas/{table}.json"
    assert same_expr(body["schema"], f'${{file("${{path.module}}/../{schema_path}")}}')
    columns = {c["name"]: c for c in json.loads((ROOT / schema_path).read_text())}
    partitioning = block(body, "time_partitioning")
    assert partitioning["type"] == "DAY"
    assert partitioning["field"] == TABLES[table]
    assert columns[TABLES[table]]["type"] == "TIMESTAMP"
    assert body["clustering"] == ["workflow", "version", "run_id"]
    assert all(c in columns for c in body["clustering"])
    assert same_expr(body["deletion_protection"], "${var.bigquery.deletion_protection}")


def test_deletion_protection_defaults_to_true() -> None:
    text = (TF_DIR / "variables.tf").read_text()
    assert re.search(r"deletion_protection\s*=\s*optional\(bool,\s*true\)", text)


# The code's rows against those schemas, in the emulator: tests/integration/test_schema_contract.py


def test_views_come_from_the_sql_files(module: tfmodel.Module) -> None:
    views = module.resource("google_bigquery_table", "views")
    assert same_expr(views["for_each"], "${local.views}")
    assert same_expr(block(views, "view")["query"], "${each.value}")
    # `$${dataset}` is the literal text `${dataset}`; `${dataset}` would be a reference.
    assert '"$${dataset}"' in (TF_DIR / "bigquery.tf").read_text()
    assert 'fileset(local.views_dir,"*.sql")' in re.sub(r"\s", "", module.locals["views"])
    assert same_expr(module.locals["views_dir"], "${path.module}/../bigquery/views")
    for sql in sorted((ROOT / "bigquery" / "views").glob("*.sql")):
        assert re.fullmatch(r"[A-Za-z0-9_]{1,1024}", sql.stem), f"{sql.name}: not a table id"
        query = sql.read_text().replace("${dataset}", "p.d")
        assert "${" not in query, f"{sql.name}: a placeholder other than ${{dataset}}"


# --- storage, notification, scheduler -------------------------------------------------------------


def test_specs_are_uploaded_under_workflows(module: tfmodel.Module) -> None:
    specs = module.resource("google_storage_bucket_object", "workflow_specs")
    assert same_expr(module.locals["workflows_dir"], "${path.module}/../workflows")
    assert same_expr(module.locals["workflow_specs"], '${fileset(local.workflows_dir, "*/*.json")}')
    assert same_expr(specs["for_each"], "${local.workflow_specs}")
    assert same_expr(specs["name"], "workflows/${each.value}")
    assert same_expr(specs["bucket"], "${google_storage_bucket.registry.name}")
    names = [
        f"workflows/{p.relative_to(ROOT / 'workflows').as_posix()}"
        for p in (ROOT / "workflows").glob("*/*.json")
    ]
    assert all(re.fullmatch(r"workflows/[^/]+/[^/]+\.json", n) for n in names)


@pytest.mark.parametrize("name", ["outputs", "registry", "sources"])
def test_buckets_are_private(module: tfmodel.Module, name: str) -> None:
    body = module.resource("google_storage_bucket", name)
    assert body["uniform_bucket_level_access"] is True
    assert body["public_access_prevention"] == "enforced"


def test_notification_waits_for_the_storage_agent_grant(module: tfmodel.Module) -> None:
    notification = module.resource("google_storage_notification", "outputs")
    assert notification["payload_format"] == "JSON_API_V1"
    assert same_expr(notification["topic"], "${google_pubsub_topic.object_events.id}")
    assert same_expr(notification["event_types"], "${var.notification.event_types}")
    assert any(
        same_expr(d, "${google_pubsub_topic_iam_member.storage_agent_object_events}")
        for d in notification["depends_on"]
    )
    grant = module.resource("google_pubsub_topic_iam_member", "storage_agent_object_events")
    assert grant["role"] == "roles/pubsub.publisher"
    assert same_expr(grant["topic"], "${google_pubsub_topic.object_events.name}")
    assert same_expr(
        grant["member"], "${data.google_storage_project_service_account.storage.member}"
    )
    assert (
        'event_types        = optional(list(string), ["OBJECT_FINALIZE"])'
        in (TF_DIR / "variables.tf").read_text()
    )


def test_push_subscription(module: tfmodel.Module) -> None:
    sub = module.resource("google_pubsub_subscription", "event_handler")
    assert same_expr(sub["topic"], "${google_pubsub_topic.object_events.id}")
    push = block(sub, "push_config")
    # The run.app URI: internal-only ingress lets same-project pushes through on that URL only.
    url = "${google_cloudfunctions2_function.event_handler.service_config[0].uri}"
    assert same_expr(push["push_endpoint"], url)
    oidc = block(push, "oidc_token")
    assert same_expr(oidc["audience"], url)
    assert same_expr(oidc["service_account_email"], "${google_service_account.push.email}")
    assert same_expr(
        block(sub, "dead_letter_policy")["dead_letter_topic"],
        "${google_pubsub_topic.dead_letter.id}",
    )
    retry = block(sub, "retry_policy")
    assert same_expr(retry["minimum_backoff"], "${var.event_subscription.minimum_backoff_seconds}s")
    assert same_expr(retry["maximum_backoff"], "${var.event_subscription.maximum_backoff_seconds}s")
    assert same_expr(sub["ack_deadline_seconds"], "${local.event_ack_deadline_seconds}")
    assert "var.event_handler.timeout_seconds" in module.locals["event_ack_deadline_seconds"]
    assert block(sub, "expiration_policy")["ttl"] == ""
    # The grants a delivery needs exist before the first delivery.
    depends = set(sub["depends_on"])
    for grant in (
        "google_cloud_run_v2_service_iam_member.event_handler_push",
        "google_pubsub_topic_iam_member.pubsub_agent_dead_letter",
        "google_service_account_iam_member.pubsub_agent_push_token",
    ):
        assert f"${{{grant}}}" in depends, grant
    dead_letter = module.resource("google_pubsub_subscription", "dead_letter")
    assert same_expr(dead_letter["topic"], "${google_pubsub_topic.dead_letter.id}")
    assert "push_config" not in dead_letter


def test_scheduler_publishes_the_reconcile_request(module: tfmodel.Module) -> None:
    job = module.resource("google_cloud_scheduler_job", "reconcile")
    target = block(job, "pubsub_target")
    assert same_expr(target["topic_name"], "${google_pubsub_topic.object_events.id}")
    assert same_expr(target["data"], '${base64encode("{}")}')
    assert obj(target["attributes"]) == {"tally-request": "reconcile"}
    assert same_expr(job["count"], "${var.reconcile_interval_minutes == null ? 0 : 1}")
    grant = module.resource("google_pubsub_topic_iam_member", "scheduler_agent_object_events")
    assert same_expr(grant["member"], "${local.service_agents.scheduler}")
    assert same_expr(
        grant["count"],
        "${var.reconcile_interval_minutes == null && var.reconcile_every_run_schedule == null"
        " ? 0 : 1}",
    )
    assert module.variables["reconcile_interval_minutes"]["default"] == 60


def test_a_scheduled_walk_of_every_run_finds_runs_whose_notifications_were_all_lost(
    module: tfmodel.Module,
) -> None:
    """The frequent request visits the open-run index only; the handler walks every run folder
    when a request carries all=true (the attribute its parser reads)."""
    from tally_handler.delivery import parse_delivery

    job = module.resource("google_cloud_scheduler_job", "reconcile_every_run")
    target = block(job, "pubsub_target")
    attributes = obj(target["attributes"])
    assert attributes == {"tally-request": "reconcile", "all": "true"}
    assert same_expr(target["topic_name"], "${google_pubsub_topic.object_events.id}")
    assert module.variables["reconcile_every_run_schedule"]["default"] == "17 3 * * *"
    envelope = {"message": {"messageId": "1", "attributes": attributes, "data": ""}}
    delivery = parse_delivery(json.dumps(envelope).encode(), {}, 5)
    assert delivery.reconcile is not None and delivery.reconcile.every_run


# --- function source archives ---------------------------------------------------------------------


def test_archives_are_built_from_the_function_dirs(module: tfmodel.Module) -> None:
    archive = next(
        b.body for b in module.of("data") if b.labels == ("archive_file", "function_sources")
    )
    assert same_expr(archive["excludes"], "${local.function_source_excludes}")
    assert same_expr(archive["source_dir"], "${each.value}")
    dirs = obj(module.locals["function_dirs"])
    assert {k: v.replace("${path.module}/../", "") for k, v in dirs.items()} == {
        f.key: f.directory.relative_to(ROOT).as_posix() for f in FUNCTIONS
    }
    objects = module.resource("google_storage_bucket_object", "function_sources")
    # The object name changes with the archive's content, so a source change redeploys.
    assert "data.archive_file.function_sources[each.key].output_md5" in objects["name"]


@BY_ID
def test_archive_contents(module: tfmodel.Module, function: Function) -> None:
    require_code(function)
    members = archive_members(function.directory, excludes(module))
    assert {"main.py", "requirements.txt"} <= set(members)
    for member in members:
        parts = member.split("/")
        assert "tests" not in parts and "__pycache__" not in parts, member
        assert not parts[-1].startswith("test_") and not member.endswith(".pyc"), member
    problems = import_problems(function.directory, members)
    assert not problems, problems
    if function.resource == "event_handler":
        assert {"schemas/events.json", "schemas/runs.json"} <= set(members)


def top_level_names(source: str) -> set[str]:
    """Names a module defines at top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@BY_ID
def test_entry_point_is_defined_in_main(module: tfmodel.Module, function: Function) -> None:
    require_code(function)
    entry_point = block(function.body(module), "build_config")["entry_point"]
    main = (function.directory / "main.py").read_text(encoding="utf-8")
    assert entry_point in top_level_names(main)


def test_entry_point_finder() -> None:
    assert top_level_names("from x.y import handle as h\ndef handle(): ...\nA = 1\n") == {
        "h",
        "handle",
        "A",
    }


def test_archive_emulation_follows_doublestar(tmp_path: Path) -> None:
    for rel in (
        "main.py",
        "requirements.txt",
        "pkg/__init__.py",
        "pkg/__pycache__/x.cpython-311.pyc",
        "pkg/mod.pyc",
        "tests/test_x.py",
        "pkg/tests/helper.py",
        "pkg/test_unit.py",
        ".env",
        "pkg/.env.local",
        "settings.local",
        "schemas/a.json",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    members = archive_members(tmp_path, excludes(tfmodel.load_module()))
    assert members == ["main.py", "pkg/__init__.py", "requirements.txt", "schemas/a.json"]


def test_import_checker_catches_missing_modules(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("requests==2.34.2\n")
    (tmp_path / "main.py").write_text(
        "import json\nimport requests\nimport yaml_not_there\nfrom tests import helpers\n"
        "from pkg import core\nfrom .sibling import x\n"
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "core.py").write_text("from . import gone\nimport urllib3\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "helpers.py").write_text("")
    members = archive_members(tmp_path, ["**/tests", "pkg/core.py"])
    problems = {(p.file, p.module) for p in import_problems(tmp_path, members)}
    assert ("main.py", "yaml_not_there") in problems
    assert ("main.py", "tests.helpers") in problems
    assert ("main.py", "pkg.core") in problems
    assert ("main.py", "requests") not in problems and ("main.py", "json") not in problems


def test_env_scanner() -> None:
    source = (
        "import os\nA = 'TALLY_A'\nos.environ['TALLY_B']\nos.environ.get('OTHER')\n"
        "os.getenv('K_SERVICE')\nmsg = 'set TALLY_C first'\n"
        "def f(env):\n    return env.get('GOOGLE_CLOUD_PROJECT'), env['D'], env.get('lower')\n"
    )
    assert env_vars_read({"m.py": source}) == {
        "TALLY_A",
        "TALLY_B",
        "OTHER",
        "K_SERVICE",
        "GOOGLE_CLOUD_PROJECT",
        "D",
    }


# --- references, variables, outputs ---------------------------------------------------------------


def test_every_reference_resolves(module: tfmodel.Module) -> None:
    assert not unresolved_references(module)
    assert len({r for b in module.blocks for r in references(b.body)}) > 50


def test_referenced_attributes_exist_in_the_schema(module: tfmodel.Module) -> None:
    assert not unknown_attributes(module)


def test_attribute_checker_catches_typos() -> None:
    snippet = module_from_text(
        'output "a" {\n  value = google_cloudfunctions2_function.f.urll\n}\n'
        'output "b" {\n  value = data.google_project.p.numbr\n}\n'
        'output "c" {\n  value = google_storage_bucket_object.o["k"].name\n}\n'
        'output "d" {\n  value = google_cloudfunctions2_function.f.service_config[0].uri\n}\n'
    )
    assert unknown_attributes(snippet) == [
        "output.a: google_cloudfunctions2_function.f.urll (did you mean 'url'?)",
        "output.b: data.google_project.p.numbr (did you mean 'number'?)",
    ]


def test_reference_checker_catches_typos() -> None:
    snippet = module_from_text(
        'variable "a" {\n  type = string\n}\nlocals {\n  x = "${var.a}-${var.b}"\n}\n'
        'resource "google_pubsub_topic" "t" {\n  name = local.y\n'
        "  labels = data.google_project.p.labels\n"
        '  kms_key_name = google_kms_crypto_key.k.id\n  project = "$${var.c}"\n}\n'
    )
    assert unresolved_references(snippet) == [
        "local.x: var.b",
        "google_pubsub_topic.t: data.google_project.p",
        "google_pubsub_topic.t: google_kms_crypto_key.k",
        "google_pubsub_topic.t: local.y",
    ]


def variable_problems(module: tfmodel.Module) -> list[str]:
    problems = []
    for block_ in module.of("variable"):
        name, body = block_.labels[0], block_.body
        if "type" not in body:
            problems.append(f"{name}: no type")
        description = body.get("description", "")
        if not description or not description.endswith("."):
            problems.append(f"{name}: description missing or not ending with a period")
        for validation in body.get("validation", []):
            if not validation.get("error_message"):
                problems.append(f"{name}: validation without error_message")
    by_file: dict[str, list[str]] = {}
    for block_ in module.of("variable"):
        by_file.setdefault(block_.file, []).append(block_.labels[0])
    for file, names in by_file.items():
        if names != sorted(names):
            problems.append(f"{file}: variables not in alphabetical order")
    return problems


def test_variables_are_typed_described_sorted(module: tfmodel.Module) -> None:
    assert not variable_problems(module)
    assert {b.file for b in module.of("variable")} == {"variables.tf"}


def test_variable_checker_catches_problems() -> None:
    snippet = module_from_text(
        'variable "b" {\n  description = "B."\n  type = string\n}\n'
        'variable "a" {\n  description = "no period"\n}\n'
    )
    assert variable_problems(snippet) == [
        "a: no type",
        "a: description missing or not ending with a period",
        "<text>: variables not in alphabetical order",
    ]


def test_outputs_are_described_and_sorted(module: tfmodel.Module) -> None:
    names = [b.labels[0] for b in module.of("output")]
    assert names == sorted(names)
    for name, body in module.outputs.items():
        assert body.get("description", "").endswith("."), name
    for name in (
        "registry_url",
        "event_handler_url",
        "outputs_bucket_name",
        "registry_bucket_name",
        "object_events_topic_id",
        "run_completions_topic_id",
        "event_subscription_id",
        "dead_letter_subscription_id",
        "events_table_id",
        "runs_table_id",
        "example_bq_query",
        "example_curl",
    ):
        assert name in module.outputs, name


def test_tfvars_example_uses_declared_variables(module: tfmodel.Module) -> None:
    example = module_from_text(
        "locals {\n" + (TF_DIR / "terraform.tfvars.example").read_text() + "\n}\n"
    ).locals
    variables, _ = tfdoc.parse_module(TF_DIR)
    types = {v.name: v.arguments.get("type", "") for v in variables}  # as written in the source
    for name, value in example.items():
        assert name in types, f"{name} is not a variable"
        if types[name].startswith("object(") and isinstance(value, list) and value:
            for field_ in obj(value):
                assert re.search(rf"\b{field_}\s*=\s*optional\(", types[name]), f"{name}.{field_}"
    assert {"project_id", "region"} <= set(example)


# --- IAM ------------------------------------------------------------------------------------------

_TARGET_KEYS = (
    "bucket",
    "topic",
    "subscription",
    "table_id",
    "name",
    "service",
    "service_account_id",
)


@dataclass(frozen=True)
class Grant:
    address: str
    role: str
    principal: str  # the member expression, e.g. google_service_account.push.member
    targets: frozenset[str]  # resources the grant is on ("project" for project level)


def grants(module: tfmodel.Module) -> list[Grant]:
    found = []
    for b in module.of("resource"):
        type_, body = b.labels[0], b.body
        if not re.search(r"_iam_(member|binding|policy)$", type_):
            continue
        members = body.get("members", [body.get("member", "")])
        members = members if isinstance(members, list) else [members]
        if type_.startswith(("google_project_iam", "google_organization_iam", "google_folder_iam")):
            targets = frozenset({"project"})
        else:
            key = next(k for k in _TARGET_KEYS if k in body)
            refs = references(body[key])
            if any("each." in e for e in interpolations(str(body[key]))):
                refs |= references(body.get("for_each", ""))
            targets = frozenset(refs)
        roles = [str(body.get("role", ""))]
        if same_expr(body.get("role"), "${each.value}"):
            # role = each.value over a literal set of roles (the parsers quote them either way)
            roles = re.findall(r"""["'](roles/[^"']+)["']""", str(body.get("for_each", "")))
        for member in members:
            exprs = interpolations(member) if isinstance(member, str) else []
            principal = re.sub(r"\s", "", exprs[0]) if exprs else str(member)
            found += [Grant(b.address, role, principal, targets) for role in roles]
    return found


PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
BUILD_SA = "google_service_account.build[0].member"
# The only project-level grants: a build writes its logs, and pushes its image to the gcf-artifacts
# repository, which the first deploy creates (no grant on it can precede the first build).
PROJECT_LEVEL = {
    (BUILD_SA, "roles/logging.logWriter"),
    (BUILD_SA, "roles/artifactregistry.writer"),
}


def iam_problems(module: tfmodel.Module) -> list[str]:
    problems = []
    for b in module.blocks:
        for text in strings(b.body):
            if re.search(r"allUsers|allAuthenticatedUsers", text):
                problems.append(f"{b.address}: public member in {text!r}")
    for grant in grants(module):
        if grant.role in PRIMITIVE_ROLES:
            problems.append(f"{grant.address}: primitive role {grant.role}")
        if grant.targets == {"project"} and (grant.principal, grant.role) not in PROJECT_LEVEL:
            problems.append(f"{grant.address}: project-level grant of {grant.role}")
        if re.search(r"_iam_(binding|policy)$", grant.address.split(".")[0]):
            problems.append(f"{grant.address}: authoritative IAM would remove other members")
    handler = "google_cloudfunctions2_function.event_handler"
    invokers = [g for g in grants(module) if handler in g.targets and "invoker" in g.role]
    if [g.principal for g in invokers] != ["google_service_account.push.member"]:
        problems.append(f"event handler invokers: {[g.principal for g in invokers]}")
    accounts = []
    for name, body in module.resources("google_cloudfunctions2_function").items():
        email = block(body, "service_config").get("service_account_email", "")
        match = re.fullmatch(r"\$\{google_service_account\.(\w+)\.email\}", str(email))
        if not match:
            problems.append(f"function {name}: no dedicated service account")
        else:
            accounts.append(match.group(1))
    if len(accounts) != len(set(accounts)) or "push" in accounts:
        problems.append(f"functions share a service account: {accounts}")
    return problems


def test_iam_rules(module: tfmodel.Module) -> None:
    assert not iam_problems(module)
    raw = "\n".join(p.read_text() for p in TF_DIR.glob("*.tf"))
    assert not re.search(r"allUsers|allAuthenticatedUsers", raw)


def test_iam_is_exactly_least_privilege(module: tfmodel.Module) -> None:
    """Every grant of the module, by principal. A new grant must be added here deliberately."""
    handler_sa, registry_sa = (
        "google_service_account.event_handler.member",
        "google_service_account.registry.member",
    )
    expected = {
        (handler_sa, "roles/storage.objectUser", "google_storage_bucket.outputs"),
        (handler_sa, "roles/pubsub.publisher", "google_pubsub_topic.run_completions"),
        (handler_sa, "roles/pubsub.publisher", "google_pubsub_topic.object_events"),
        (handler_sa, "roles/bigquery.dataEditor", "google_bigquery_table.events"),
        (handler_sa, "roles/bigquery.dataEditor", "google_bigquery_table.runs"),
        (handler_sa, "roles/run.invoker", "google_cloudfunctions2_function.registry"),
        (registry_sa, "roles/storage.objectUser", "google_storage_bucket.registry"),
        (registry_sa, "roles/pubsub.publisher", "google_pubsub_topic.object_events"),
        (BUILD_SA, "roles/logging.logWriter", "project"),
        (BUILD_SA, "roles/artifactregistry.writer", "project"),
        (BUILD_SA, "roles/storage.objectViewer", "google_storage_bucket.sources"),
        (
            "local.service_agents.pubsub",
            "roles/iam.serviceAccountTokenCreator",
            "google_service_account.completions_webhook_push",
        ),
        (
            "local.service_agents.pubsub",
            "roles/pubsub.publisher",
            "google_pubsub_topic.completions_webhook_dead_letter",
        ),
        (
            "local.service_agents.pubsub",
            "roles/pubsub.subscriber",
            "google_pubsub_subscription.completions_webhook",
        ),
        (
            "google_service_account.push.member",
            "roles/run.invoker",
            "google_cloudfunctions2_function.event_handler",
        ),
        ("each.value", "roles/run.invoker", "google_cloudfunctions2_function.registry"),
        (
            "local.service_agents.pubsub",
            "roles/iam.serviceAccountTokenCreator",
            "google_service_account.push",
        ),
        (
            "local.service_agents.pubsub",
            "roles/pubsub.publisher",
            "google_pubsub_topic.dead_letter",
        ),
        (
            "local.service_agents.pubsub",
            "roles/pubsub.subscriber",
            "google_pubsub_subscription.event_handler",
        ),
        (
            "local.service_agents.scheduler",
            "roles/pubsub.publisher",
            "google_pubsub_topic.object_events",
        ),
        (
            "data.google_storage_project_service_account.storage.member",
            "roles/pubsub.publisher",
            "google_pubsub_topic.object_events",
        ),
    }
    actual = {(g.principal, g.role, t) for g in grants(module) for t in g.targets}
    assert actual == expected, (
        f"not expected: {sorted(actual - expected)}; missing: {sorted(expected - actual)}"
    )
    # The registry's invokers come from variables whose validation refuses public members.
    invokers = module.locals["registry_invokers"]
    assert references(invokers) == {"var.registry"}


def test_iam_checker_catches_violations() -> None:
    shared_account = (
        "  service_config {\n    service_account_email = google_service_account.shared.email\n"
        "  }\n}\n"
    )
    snippet = module_from_text(
        'resource "google_project_iam_member" "a" {\n  project = "p"\n  role = "roles/editor"\n'
        '  member = "serviceAccount:x@p.iam.gserviceaccount.com"\n}\n'
        'resource "google_storage_bucket_iam_binding" "b" {\n  bucket = "b"\n'
        '  role = "roles/storage.objectViewer"\n  members = ["allUsers"]\n}\n'
        'resource "google_cloud_run_v2_service_iam_member" "c" {\n'
        "  name = google_cloudfunctions2_function.event_handler.name\n"
        '  role = "roles/run.invoker"\n  member = google_service_account.registry.member\n}\n'
        'resource "google_cloudfunctions2_function" "event_handler" {\n'
        f"{shared_account}"
        'resource "google_cloudfunctions2_function" "registry" {\n'
        f"{shared_account}"
    )
    problems = iam_problems(snippet)
    for expected in (
        "primitive role roles/editor",
        "project-level grant",
        "public member",
        "authoritative IAM",
        "event handler invokers: ['google_service_account.registry.member']",
        "functions share a service account",
    ):
        assert any(expected in p for p in problems), (expected, problems)
