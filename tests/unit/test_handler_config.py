"""Configuration from the environment: names and defaults as docs/design.md lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tally_handler import config as settings
from tally_handler.config import Config, ConfigError
from tally_handler.layout import DEFAULT_TEMPLATE

REQUIRED = {
    "TALLY_PROJECT": "tally-local",
    "TALLY_OUTPUTS_BUCKET": "outs",
    "TALLY_REGISTRY_URL": "http://127.0.0.1:8081/",
    "TALLY_COMPLETIONS_TOPIC": "completions",
    "TALLY_EVENTS_TABLE": "tally-local.tally.events",
    "TALLY_RUNS_TABLE": "tally-local.tally.runs",
}


def test_defaults() -> None:
    config = Config.from_env(REQUIRED)
    assert config.registry_url == "http://127.0.0.1:8081"  # trailing slash dropped
    assert config.registry_auth == "id-token"
    assert config.layout.template == DEFAULT_TEMPLATE
    assert (config.manifest_name, config.failure_marker) == ("output.json", "_FAILED")
    assert (config.claim_lease_seconds, config.max_delivery_attempts) == (600, 5)
    assert config.reconcile_max_runs == 500
    assert (config.object_events_topic, config.presence_cache_runs) == (None, 1000)
    assert not config.faults.probabilities


def test_every_variable_is_honoured() -> None:
    config = Config.from_env(
        REQUIRED
        | {
            "TALLY_REGISTRY_AUTH": "none",
            "TALLY_LAYOUT": "runs/{workflow}/{version}/{run_id}/{path}",
            "TALLY_MANIFEST_NAME": "_manifest.json",
            "TALLY_FAILURE_MARKER": "FAILED.txt",
            "TALLY_CLAIM_LEASE_SECONDS": "60",
            "TALLY_MAX_DELIVERY_ATTEMPTS": "10",
            "TALLY_RECONCILE_MAX_RUNS": "50",
            "TALLY_FAULTS": "after_claim=0.5;seed=3",
            "TALLY_OBJECT_EVENTS_TOPIC": "object-events",
            "TALLY_PRESENCE_CACHE_RUNS": "0",
        }
    )
    assert (config.object_events_topic, config.presence_cache_runs) == ("object-events", 0)
    assert config.registry_auth == "none"
    assert config.layout.runs_root_prefix() == "runs/"
    assert (config.manifest_name, config.failure_marker) == ("_manifest.json", "FAILED.txt")
    assert (config.claim_lease_seconds, config.max_delivery_attempts) == (60, 10)
    assert config.reconcile_max_runs == 50
    assert config.faults.seed == 3


def test_every_missing_variable_is_named_with_what_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"TALLY_PROJECT": "  "})
    problems = caught.value.problems
    assert [p.split(" ", 1)[0] for p in problems] == list(REQUIRED)
    assert all("is not set: set it to" in p for p in problems)
    assert "TALLY_PROJECT is not set: set it to the project id of the topics and tables" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("TALLY_PROJECT", "my project", "spaces"),
        ("TALLY_OUTPUTS_BUCKET", "gs://outs", "bare bucket name"),
        ("TALLY_REGISTRY_URL", "registry:8080", "http:// or https://"),
        ("TALLY_REGISTRY_AUTH", "oauth", "id-token, none"),
        ("TALLY_COMPLETIONS_TOPIC", "projects/p/topics/c", "topic id"),
        ("TALLY_EVENTS_TABLE", "events", "project.dataset.table"),
        ("TALLY_RUNS_TABLE", "p..runs", "project.dataset.table"),
        ("TALLY_LAYOUT", "{workflow}/{path}", "lacks {version}, {run_id}"),
        ("TALLY_MANIFEST_NAME", "/output.json", "inside the run folder"),
        ("TALLY_FAILURE_MARKER", "_tally/failed", "inside the run folder"),
        ("TALLY_CLAIM_LEASE_SECONDS", "ten", "positive whole number"),
        ("TALLY_MAX_DELIVERY_ATTEMPTS", "0", "positive whole number"),
        ("TALLY_RECONCILE_MAX_RUNS", "-5", "positive whole number"),
        ("TALLY_FAULTS", "after_nap=1", "unknown fault step"),
        ("TALLY_OBJECT_EVENTS_TOPIC", "projects/p/topics/t", "topic id"),
        ("TALLY_PRESENCE_CACHE_RUNS", "-1", "whole number"),
    ],
)
def test_invalid_values_are_named(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(REQUIRED | {name: value})
    assert len(caught.value.problems) == 1
    message = caught.value.problems[0]
    assert message.startswith(f"{name}={value!r} is invalid")
    assert problem in message


def test_all_problems_are_reported_at_once() -> None:
    environ = REQUIRED | {"TALLY_REGISTRY_AUTH": "x", "TALLY_CLAIM_LEASE_SECONDS": "x"}
    del environ["TALLY_RUNS_TABLE"]
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    assert len(caught.value.problems) == 3


def test_manifest_and_failure_marker_must_differ() -> None:
    with pytest.raises(ConfigError, match="different names"):
        Config.from_env(REQUIRED | {"TALLY_FAILURE_MARKER": "output.json"})


def test_env_var_names_appear_only_where_they_are_read() -> None:
    """The Terraform contract test scans the function's code for TALLY_* literals."""
    source = Path(settings.__file__).read_text(encoding="utf-8")
    literals = set(re.findall(r'"(TALLY_[A-Z_]+)"', source))
    assert literals == {setting.env for setting in settings.SETTINGS}
