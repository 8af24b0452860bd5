"""The CLI's pure parts: configuration precedence, env files, durations, query files, replay
filters and attributes, and the spec comparison of `tally status`."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from tally_cli import config
from tally_cli.errors import ConfigError
from tally_cli.eventlog import catalogue, parse_query
from tally_cli.main import parse_duration
from tally_cli.registry import spec_files, spec_names
from tally_cli.replay import matches, parse_filters, replay_attributes
from tally_cli.status import changes_since, expected_outputs, handler_code, parse_run, state_of


def test_flags_then_environment_then_file_then_defaults(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(
        "# comment\nexport TALLY_PROJECT=from-file\nexport TALLY_DATASET=file_ds\n"
        "TALLY_OUTPUTS_BUCKET='bucket with space'\n"
    )
    settings = config.load(
        {"project": "from-flag"},
        environ={"TALLY_DATASET": "env_ds", "TALLY_ENV_FILE": str(env_file)},
    )
    assert settings.project == "from-flag" and settings.source("project") == "--project"
    assert settings.dataset == "env_ds" and settings.source("dataset") == "env TALLY_DATASET"
    assert settings.outputs_bucket == "bucket with space"
    assert settings.source("outputs_bucket") == f"file {env_file}"
    assert settings.dead_letter_subscription == "tally-dead-letter"  # Terraform's, prefix tally
    assert settings.source("dead_letter_subscription") == "default"


def test_env_file_is_found_only_while_the_environment_names_no_platform(tmp_path):
    (tmp_path / ".devstack").mkdir()
    (tmp_path / ".devstack" / "env").write_text("export TALLY_PROJECT=local\n")
    assert config.find_env_file({}, tmp_path) == tmp_path / ".devstack" / "env"
    assert config.find_env_file({"TALLY_PROJECT": "real"}, tmp_path) is None
    assert config.find_env_file({"PUBSUB_EMULATOR_HOST": "x:1"}, tmp_path) is None
    named = tmp_path / "other"
    assert (
        config.find_env_file({"TALLY_ENV_FILE": str(named), "TALLY_PROJECT": "p"}, tmp_path)
        == named
    )


@pytest.mark.parametrize("text", ["no equals sign", "export 1BAD=x", "A='unclosed"])
def test_malformed_env_file_names_the_line(tmp_path, text):
    path = tmp_path / "env"
    path.write_text(f"export OK=1\n{text}\n")
    with pytest.raises(ConfigError, match=f"{path}:2"):
        config.read_env_file(path)


def test_resource_paths_and_missing_settings():
    settings = config.Settings(project="p")
    assert settings.topic_path("t") == "projects/p/topics/t"
    assert settings.subscription_path("projects/q/subscriptions/s") == "projects/q/subscriptions/s"
    assert settings.table("events") == "p.tally.events"
    with pytest.raises(ConfigError, match="TALLY_REGISTRY_URL"):
        settings.require("registry_url")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1h30m", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "1h 30m", "-1h"])
def test_bad_durations(text):
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_query_files_declare_title_and_parameters(tmp_path):
    path = tmp_path / "q.sql"
    path.write_text(
        "-- q: what it answers.\n"
        "-- @param run_id STRING  the run id\n"
        "-- @param days INT64 = 7  how many days\n"
        "-- @param workflow STRING = ''  only this workflow\n"
        "SELECT 1\n-- @param late STRING = 'x'  not a header line\n"
    )
    query = parse_query(path)
    assert query.description == "what it answers."
    assert [(p.name, p.type, p.default) for p in query.params] == [
        ("run_id", "STRING", None),
        ("days", "INT64", "7"),
        ("workflow", "STRING", ""),
    ]
    assert query.bind({"run_id": "r"}) == {"run_id": "r", "days": 7, "workflow": ""}
    with pytest.raises(ConfigError, match="needs --param run_id"):
        query.bind({})
    with pytest.raises(ConfigError, match="must be int64"):
        query.bind({"run_id": "r", "days": "1; DROP"})
    with pytest.raises(ConfigError, match="no parameter nope"):
        query.bind({"run_id": "r", "nope": "1"})


def test_every_documented_query_parses_and_uses_the_dataset_placeholder():
    queries = catalogue()
    assert len(queries) >= 5
    for query in queries.values():
        assert query.description, f"{query.name}: first line is '-- {query.name}: ...'"
        assert "${dataset}" in query.sql
        for param in query.params:
            assert f"@{param.name}" in query.sql, f"{query.name}: @{param.name} unused"


def test_replay_filters_are_globs_on_attributes():
    filters = parse_filters(["eventType=OBJECT_FINALIZE", "objectId=rna-seq/*"])
    assert matches({"eventType": "OBJECT_FINALIZE", "objectId": "rna-seq/2/r/a"}, filters)
    assert not matches({"eventType": "OBJECT_DELETE", "objectId": "rna-seq/2/r/a"}, filters)
    assert not matches({"eventType": "OBJECT_FINALIZE"}, filters)
    assert parse_filters(["empty="]) == {"empty": ""}
    with pytest.raises(ConfigError):
        parse_filters(["=x"])


def test_replay_keeps_original_attributes_and_marks_the_replay():
    assert replay_attributes(
        {
            "objectId": "a",
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
            "CloudPubSubDeadLetterSourceSubscription": "s",
            "tally-replayed": "false",
        }
    ) == {"objectId": "a", "tally-replayed": "true"}


@pytest.mark.parametrize("text", ["a/b", "a/b/c/d", "a//c", "", "/"])
def test_run_names_need_three_parts(text):
    with pytest.raises(ConfigError):
        parse_run(text)


def test_status_compares_outputs_with_the_spec():
    handler_code()
    from tally_handler.spec import Spec

    spec = Spec.from_json(
        {
            "workflow": "w",
            "version": "1",
            "expected_outputs": [
                {"path": "a"},
                {"path": "opt", "required": False},
                {"pattern": "p/*.csv", "count": 2},
            ],
        }
    )
    names = ("a", "p/1.csv", "p/2.csv", "p/3.csv", "x")
    present = {name: {"path": name, "generation": 1} for name in names}
    expected, missing, unexpected = expected_outputs(spec, present, "output.json", "_FAILED")
    assert missing == [{"pattern": "p/*.csv", "count": 2, "found": 3}]
    assert unexpected == ["x"]
    assert [e["present"] for e in expected] == [True, False, False]
    assert present["p/1.csv"]["expected"] == {"pattern": "p/*.csv"}


def test_state_comes_from_the_announcement_record_first():
    published = {"claim_status": "published", "state": "FAILED"}
    nothing: dict = {"present": False}
    assert state_of(published, nothing, [], {"state": "RUNNING"}, overdue=True) == "FAILED"
    assert state_of(published, nothing, ["a.txt: deleted"], None, overdue=False) == "CHANGED"
    claimed = {"claim_status": "claimed", "state": "COMPLETE"}
    assert state_of(claimed, nothing, [], {"state": "COMPLETE"}, overdue=False) == "ANNOUNCING"
    foreign = {"present": True, "foreign": "not a tally manifest"}
    assert state_of(None, foreign, [], {"state": "RUNNING"}, overdue=False) == "BLOCKED"
    assert state_of(None, nothing, [], {"state": "STALLED"}, overdue=False) == "STALLED"
    assert state_of(None, nothing, [], {"state": "RUNNING"}, overdue=True) == "STALLED"


def test_changes_compare_the_bucket_with_the_announced_generations():
    announced = {"state": "COMPLETE", "generations": {"a": 1, "b": 2}}
    present = {
        "a": {"generation": 1, "expected": {"path": "a"}},
        "c": {"generation": 5, "expected": {"path": "c"}},
        "stray": {"generation": 9, "expected": None},
    }
    assert changes_since(announced, present, failure_marker=False) == ["b: deleted", "c: added"]
    assert changes_since({**announced, "state": "FAILED"}, present, failure_marker=True) == []


def test_register_names_come_from_the_document_or_the_path(tmp_path):
    path = Path("workflows/rna-seq/2.0.0.json")
    assert spec_names({"workflow": "w", "version": "v"}, path) == ("w", "v")
    assert spec_names({}, path) == ("rna-seq", "2.0.0")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "1.json").write_text("{}")
    (tmp_path / "w" / "notes.txt").write_text("")
    assert spec_files([tmp_path]) == [tmp_path / "w" / "1.json"]
    with pytest.raises(ConfigError):
        spec_files([tmp_path / "missing.json"])
