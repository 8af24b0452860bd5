"""monitoring.tf against the code: every log-based metric's filter and extractors name fields and
values the event handler really logs. The log lines are made by the handler's own `_log`
(tally_handler/app.py) for every outcome of `Outcome` (read at test time, never retyped), and
turned into Cloud Logging entries the way Cloud Run does it for a JSON line on stdout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.terraform import tfmodel
from tests.terraform.tfmodel import ROOT, TF_DIR, block, same_expr

PREFIX = "tally"  # the prefix variable's default
SCHEMA = ROOT / "functions/event_handler/schemas/events.json"
RUNBOOK = ROOT / "docs/operations.md"
# Keys Cloud Logging takes out of a structured line; the rest is jsonPayload.
SPECIAL_KEYS = {"severity", "logging.googleapis.com/trace", "logging.googleapis.com/labels"}


# --- a small evaluator of the Logging query language subset monitoring.tf uses --------------------

TERM = re.compile(r'^([\w.]+)\s*(=|:)\s*(\*|"(?:[^"\\]|\\.)*")$')


def resolve(text: str, module: tfmodel.Module) -> str:
    """A filter with its Terraform interpolations replaced by their values (default prefix)."""
    text = text.replace("${local.handler_log_filter}", module.locals["handler_log_filter"])
    names = tfmodel.obj(module.locals["names"])
    for key, value in names.items():
        text = text.replace(f"${{local.names.{key}}}", value.replace("${var.prefix}", PREFIX))
    text = text.replace("${var.prefix}", PREFIX).replace('\\"', '"')
    assert "${" not in text, f"unresolved interpolation in {text!r}"
    return text


def terms(filter_: str) -> list[tuple[str, str, str]]:
    """(field path, operator, value) of each term of a conjunction."""
    found = []
    for part in filter_.split(" AND "):
        match = TERM.match(part.strip())
        assert match, f'term {part!r} is not field="value" or field:* / field:"value"'
        value = match.group(3)
        found.append((match.group(1), match.group(2), value if value == "*" else json.loads(value)))
    return found


def lookup(entry: dict[str, Any], path: str) -> Any:
    node: Any = entry
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def matches(filter_: str, entry: dict[str, Any]) -> bool:
    for path, op, value in terms(filter_):
        actual = lookup(entry, path)
        if value == "*":
            ok = actual is not None
        elif op == "=":
            ok = str(actual) == value
        else:
            ok = actual is not None and value in str(actual)
        if not ok:
            return False
    return True


def extracted_field(extractor: str) -> str:
    match = re.fullmatch(r"EXTRACT\((jsonPayload\.[\w.]+)\)", extractor)
    assert match, f"extractor {extractor!r} is not EXTRACT(jsonPayload.field)"
    return match.group(1)


# --- real log lines -------------------------------------------------------------------------------


def sample_row() -> dict[str, Any]:
    """A value for every column of the events table, the row `_log` picks its fields from."""
    samples = {"STRING": "x", "INTEGER": 3, "FLOAT": 1.5, "BOOLEAN": True, "TIMESTAMP": "2025"}
    row = {c["name"]: samples.get(c["type"], "x") for c in json.loads(SCHEMA.read_text())}
    row.update(workflow="rna-seq", version="2.0.0", run_id="s-42", output_path="a.txt")
    row["completion_seconds"] = 2.5  # on announcements' lines only (app._with_latency)
    return row


def log_entry(line: str, service: str) -> dict[str, Any]:
    """What Cloud Logging stores for one JSON line a Cloud Run service printed."""
    payload = json.loads(line)
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "severity": payload.get("severity", "DEFAULT"),
        "jsonPayload": {k: v for k, v in payload.items() if k not in SPECIAL_KEYS},
    }


@pytest.fixture(scope="module")
def outcome_type() -> Any:
    from tally_handler.outcomes import Outcome

    return Outcome


@pytest.fixture(scope="module")
def handler_lines(outcome_type: Any) -> dict[str, dict[str, Any]]:
    """outcome value -> the log entry the handler writes for a delivery with that outcome."""
    import contextlib
    import io

    from tally_handler import app

    entries = {}
    for outcome in outcome_type:
        row = {**sample_row(), "outcome": str(outcome)}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            app._log("INFO", f"a delivery {outcome}", row)
        (line,) = out.getvalue().splitlines()
        entries[str(outcome)] = log_entry(line, f"{PREFIX}-event-handler")
    return entries


def metrics(module: tfmodel.Module) -> dict[str, dict[str, Any]]:
    return module.resources("google_logging_metric")


# --- the contract ---------------------------------------------------------------------------------


def test_every_metric_names_fields_the_handler_logs(
    module: tfmodel.Module, handler_lines: dict[str, dict[str, Any]]
) -> None:
    logged = set().union(*(e["jsonPayload"] for e in handler_lines.values()))
    assert {"outcome", "workflow", "component"} <= logged
    assert metrics(module), "monitoring.tf defines no log-based metric"
    for name, body in metrics(module).items():
        fields = {p for p, _, _ in terms(resolve(body["filter"], module))}
        extractors = list(tfmodel.obj(body.get("label_extractors", [{}])).values())
        if "value_extractor" in body:
            extractors.append(body["value_extractor"])
        fields |= {extracted_field(e) for e in extractors}
        for path in fields:
            if path.startswith("jsonPayload."):
                field = path.removeprefix("jsonPayload.")
                assert field in logged, f"{name}: {path} is never logged"
            else:
                assert path in {"resource.type", "resource.labels.service_name", "severity"}, path


def test_every_compared_value_is_one_the_handler_writes(
    module: tfmodel.Module, handler_lines: dict[str, dict[str, Any]], outcome_type: Any
) -> None:
    outcomes = {str(o) for o in outcome_type}
    components = {e["jsonPayload"]["component"] for e in handler_lines.values()}
    for name, body in metrics(module).items():
        for path, _, value in terms(resolve(body["filter"], module)):
            if path == "jsonPayload.outcome" and value != "*":
                assert value in outcomes, f"{name}: no outcome {value!r} in Outcome"
            if path == "jsonPayload.component":
                assert {value} == components, f"{name}: component {value!r}"
            if path == "resource.labels.service_name":
                handler = module.resource("google_cloudfunctions2_function", "event_handler")
                assert same_expr(handler["name"], "${local.names.event_handler}")
                assert value == f"{PREFIX}-event-handler"


@pytest.mark.parametrize(
    ("metric", "outcome_names"),
    [("runs_failed", ["FAILED"]), ("runs_stalled", ["STALLED"])],
)
def test_run_metrics_count_exactly_their_outcome(
    module: tfmodel.Module,
    handler_lines: dict[str, dict[str, Any]],
    outcome_type: Any,
    metric: str,
    outcome_names: list[str],
) -> None:
    wanted = {str(outcome_type[n]) for n in outcome_names}
    filter_ = resolve(metrics(module)[metric]["filter"], module)
    counted = {o for o, entry in handler_lines.items() if matches(filter_, entry)}
    assert counted == wanted
    # The workflow label is filled from the same line.
    extractor = tfmodel.obj(metrics(module)[metric]["label_extractors"])["workflow"]
    entry = handler_lines[next(iter(wanted))]
    assert lookup(entry, extracted_field(extractor)) == "rna-seq"


def test_delivery_metrics_count_every_outcome(
    module: tfmodel.Module, handler_lines: dict[str, dict[str, Any]]
) -> None:
    for metric in ("deliveries", "delivery_storage_ops"):
        filter_ = resolve(metrics(module)[metric]["filter"], module)
        assert all(matches(filter_, e) for e in handler_lines.values()), metric
    extractor = metrics(module)["delivery_storage_ops"]["value_extractor"]
    assert isinstance(lookup(handler_lines["recorded"], extracted_field(extractor)), int)


def test_filters_skip_other_services_and_components(
    module: tfmodel.Module, handler_lines: dict[str, dict[str, Any]]
) -> None:
    entry = handler_lines["failed"]
    other_service = {**entry, "resource": {**entry["resource"], "labels": {"service_name": "x"}}}
    other_component = {**entry, "jsonPayload": {**entry["jsonPayload"], "component": "registry"}}
    for name, body in metrics(module).items():
        filter_ = resolve(body["filter"], module)
        assert not matches(filter_, other_service), name
        assert not matches(filter_, other_component), name


def test_evaluator_can_fail() -> None:
    entry = {"jsonPayload": {"outcome": "failed"}, "resource": {"type": "cloud_run_revision"}}
    assert matches('resource.type="cloud_run_revision" AND jsonPayload.outcome="failed"', entry)
    assert not matches('jsonPayload.outcome="stalled"', entry)
    assert not matches("jsonPayload.workflow:*", entry)
    with pytest.raises(AssertionError):
        terms("jsonPayload.outcome >= 3")


# --- alerts, runbook, dashboard -------------------------------------------------------------------

ALERTS = {
    "dead_letters": "Alert: dead letters waiting",
    "oldest_unacked": "Alert: object events waiting",
    "handler_5xx": "Alert: event handler answers 5xx",
    "registry_5xx": "Alert: registry answers 5xx",
    "runs_failed": "Alert: runs failed",
    "runs_stalled": "Alert: runs stalled",
}


def test_every_alert_is_documented_and_linked_to_the_runbook(module: tfmodel.Module) -> None:
    policies = module.resources("google_monitoring_alert_policy")
    assert set(policies) == set(ALERTS)
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    for name, section in ALERTS.items():
        body = policies[name]
        assert same_expr(body["count"], "${local.monitoring}"), name
        assert same_expr(
            body["notification_channels"], "${var.monitoring.notification_channels}"
        ), name
        doc = block(body, "documentation")
        assert (
            f'section \\"{section}\\"' in doc["content"] or f'section "{section}"' in doc["content"]
        ), name
        assert section in headings, f"docs/operations.md has no section {section!r}"


def test_alert_conditions_watch_the_right_resources(module: tfmodel.Module) -> None:
    policies = module.resources("google_monitoring_alert_policy")

    def condition(name: str) -> dict[str, Any]:
        return block(block(policies[name], "conditions"), "condition_threshold")

    assert "subscription/num_undelivered_messages" in condition("dead_letters")["filter"]
    assert "local.dead_letter_subscriptions" in condition("dead_letters")["filter"]
    oldest = condition("oldest_unacked")["filter"]
    assert "oldest_unacked_message_age" in oldest
    assert "google_pubsub_subscription.event_handler.name" in oldest
    for name, service in (("handler_5xx", "event_handler"), ("registry_5xx", "registry")):
        c = condition(name)
        assert f"local.names.{service}" in c["filter"] and "5xx" in c["filter"]
        assert "5xx" not in c["denominator_filter"]
    for name in ("runs_failed", "runs_stalled"):
        assert f"local.log_metric_types.{name}" in condition(name)["filter"]
        metric_name = metrics(module)[name]["name"]
        assert obj_value(module.locals["log_metric_types"], name).endswith(metric_name)


def obj_value(value: Any, key: str) -> str:
    return tfmodel.obj(value)[key]


def test_dashboard_charts(module: tfmodel.Module) -> None:
    dashboard = module.resource("google_monitoring_dashboard", "tally")
    assert "jsonencode" in dashboard["dashboard_json"]
    text = (TF_DIR / "monitoring.tf").read_text()
    for title in (
        "Deliveries by outcome",
        "Storage operations per delivery",
        "Dead letters waiting",
        "Instances by function",
        "Completion latency",
    ):
        assert f'"{title}' in text, title
    for metric_type in tfmodel.obj(module.locals["log_metric_types"]):
        assert metric_type in metrics(module)


def test_monitoring_is_on_by_default() -> None:
    text = Path(TF_DIR / "variables.tf").read_text()
    assert "enabled                    = optional(bool, true)" in text
