"""The `tally` CLI through a real subprocess against the local platform: --json output, exit codes
(0 ok, 1 check failed, 2 usage, 3 dependency unreachable), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import free_port
from tests.conftest import ROOT, poll
from tests.integration.test_views import insert, known_data

pytestmark = pytest.mark.integration


def clean_environ() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TALLY_") and not k.endswith("_EMULATOR_HOST")
    }
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "200"
    return env


def tally(
    stack: Any,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    platform: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    full_env = clean_environ()
    if platform:
        full_env.update(stack.client_env)
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "tally_cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def tally_json(stack: Any, *args: str, expect: int = 0, **kwargs: Any) -> Any:
    done = tally(stack, *args, "--json", **kwargs)
    assert done.returncode == expect, f"exit {done.returncode}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["status"],
        ["status", "only/two"],
        ["status", "a//c"],
        ["runs", "--since", "2 fortnights"],
        ["runs", "--limit", "0"],
        ["query"],
        ["query", "no_such_query"],
        ["query", "run_history"],
        ["query", "run_history", "--param", "run_id"],
        ["query", "slowest_runs", "-p", "days=soon"],
        ["query", "slowest_runs", "-p", "nope=1"],
        ["replay", "--filter", "no-equals-sign"],
        ["replay", "--max", "0"],
        ["register"],
        ["register", "/nonexistent/spec.json"],
        ["--timeout", "-1", "runs"],
    ],
)
def test_bad_arguments_are_usage_errors(stack, args):
    done = tally(stack, *args)
    assert done.returncode == 2, f"{args}: exit {done.returncode}: {done.stderr}"
    assert done.stderr.strip(), "a usage error says what is wrong"


def test_help_lists_every_command(stack):
    done = tally(stack, "--help")
    assert done.returncode == 0
    for name in (
        "register",
        "workflows",
        "workflow",
        "status",
        "runs",
        "reconcile",
        "replay",
        "query",
    ):
        assert name in done.stdout


def test_unreachable_dependencies_exit_3_with_one_line(stack):
    dead = f"127.0.0.1:{free_port()}"
    cases = [
        (["workflows"], {"TALLY_REGISTRY_URL": f"http://{dead}"}, "registry"),
        (["runs"], {"TALLY_BIGQUERY_ENDPOINT": f"http://{dead}"}, "BigQuery"),
        (["replay", "--dry-run"], {"PUBSUB_EMULATOR_HOST": dead}, "Pub/Sub"),
        (["status", "a/b/c"], {"STORAGE_EMULATOR_HOST": f"http://{dead}"}, "Storage"),
    ]
    for args, env, name in cases:
        done = tally(stack, "--timeout", "2", *args, env=env, timeout=60)
        assert done.returncode == 3, f"{args}: exit {done.returncode}: {done.stderr}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and dead in lines[0], done.stderr


def test_missing_configuration_is_named(stack, tmp_path):
    done = tally(stack, "status", "a/b/c", platform=False, cwd=tmp_path, env={"TALLY_PROJECT": "p"})
    assert done.returncode == 2 and "TALLY_OUTPUTS_BUCKET" in done.stderr


def test_env_file_named_or_found_in_the_working_directory(stack, tmp_path):
    lines = [f"export {k}={v}" for k, v in stack.client_env.items()]
    (tmp_path / ".devstack").mkdir()
    env_file = tmp_path / ".devstack" / "env"
    env_file.write_text("# written by the test\n" + "\n".join(lines) + "\n")
    named = tally_json(stack, "workflows", platform=False, env={"TALLY_ENV_FILE": str(env_file)})
    found = tally_json(stack, "workflows", platform=False, cwd=tmp_path)
    assert "variant-calling" in {w["workflow"] for w in named["workflows"]}
    assert named == found
    # The environment wins over the file.
    done = tally(
        stack,
        "--timeout",
        "2",
        "workflows",
        platform=False,
        env={
            "TALLY_ENV_FILE": str(env_file),
            "TALLY_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
        },
    )
    assert done.returncode == 3 and "env TALLY_REGISTRY_URL" in done.stderr


def write_spec(folder: Path, workflow: str, version: str, **extra: Any) -> Path:
    spec = {
        "workflow": workflow,
        "version": version,
        "description": "A test workflow.",
        "deadline_minutes": 60,
        "expected_outputs": [
            {"path": "a.txt"},
            {"path": "b/c.txt"},
            {"pattern": "parts/*.csv", "count": 2},
            {"path": "log.txt", "required": False},
        ],
        **extra,
    }
    path = folder / workflow / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return path


def test_register_is_idempotent_and_reports_each_file(stack, unique, tmp_path):
    wf = f"cli-{unique}"
    first = write_spec(tmp_path, wf, "1.0.0")
    token = {"TALLY_REGISTRY_TOKEN": stack.mint_token()}

    refused = tally_json(stack, "register", str(first), expect=1)
    assert refused["results"][0]["result"] == "unauthorized"

    created = tally_json(stack, "register", str(tmp_path), env=token)
    assert [
        (r["workflow"], r["version"], r["result"], r["status"]) for r in created["results"]
    ] == [(wf, "1.0.0", "created", 201)]
    again = tally_json(stack, "register", str(first), env=token)
    assert again["results"][0]["result"] == "unchanged"

    second = write_spec(tmp_path, wf, "1.1.0")
    changed = tally_json(stack, "register", str(second), "--token", stack.mint_token())
    assert changed["results"][0]["result"] == "created"

    write_spec(tmp_path, wf, "1.0.0", description="Different content, same version.")
    bad = tmp_path / wf / "2.0.0.json"
    bad.write_text(json.dumps({"workflow": wf, "version": "2.0.0", "expected_outputs": "no"}))
    mixed = tally_json(stack, "register", str(first), str(bad), env=token, expect=1)
    assert [r["result"] for r in mixed["results"]] == ["conflict", "invalid"]
    assert "new version" in mixed["results"][0]["message"]

    listing = tally_json(stack, "workflows")
    mine = [w for w in listing["workflows"] if w["workflow"] == wf]
    assert mine and mine[0]["versions"] == ["1.0.0", "1.1.0"]
    shown = tally_json(stack, "workflow", wf, "--version", "1.0.0")
    assert shown["default_version"] == "1.1.0"
    assert shown["spec"]["expected_outputs"][0]["path"] == "a.txt"
    assert tally(stack, "workflow", f"none-{unique}").returncode == 1
    assert tally(stack, "workflow", wf, "--version", "9.9.9").returncode == 1


def test_status_compares_the_bucket_with_the_spec(stack, unique, tmp_path):
    wf = f"st-{unique}"
    path = write_spec(tmp_path, wf, "1.0.0")
    tally_json(stack, "register", str(path), env={"TALLY_REGISTRY_TOKEN": stack.mint_token()})
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    for name in ("a.txt", "parts/1.csv", "extra.bin"):
        bucket.blob(f"{wf}/1.0.0/r1/{name}").upload_from_string(name)

    doc = tally_json(stack, "status", f"{wf}/1.0.0/r1")
    assert doc["state"] == "RUNNING" and doc["spec"]["deadline_minutes"] == 60
    outputs = doc["outputs"]
    assert sorted(o["path"] for o in outputs["present"]) == ["a.txt", "extra.bin", "parts/1.csv"]
    assert outputs["missing"] == [
        {"path": "b/c.txt"},
        {"pattern": "parts/*.csv", "count": 2, "found": 1},
    ]
    assert outputs["unexpected"] == ["extra.bin"]
    assert doc["manifest"] == {"present": False} and doc["announcement"] is None
    assert doc["past_deadline"] is False

    incomplete = tally(stack, "status", f"{wf}/1.0.0/r1", "--require-complete")
    assert incomplete.returncode == 1 and "RUNNING" in incomplete.stderr
    human = tally(stack, "status", f"{wf}/1.0.0/r1")
    assert human.returncode == 0 and "missing b/c.txt" in human.stdout
    missing = tally(stack, "status", f"{wf}/1.0.0/no-such-run")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_status_of_logged_runs_shows_state_and_history(stack, unique):
    data = known_data(unique)
    insert(stack, data)

    def done_status() -> Any:
        doc = tally_json(stack, "status", f"{data.wf}/1.0.0/done", "--require-complete")
        return doc if len(doc["history"]) == 6 else None

    doc = poll(done_status, timeout=30, message="the run's rows in the event log")
    assert doc["state"] == "COMPLETE"
    assert doc["spec"] is None and "does not know" in doc["spec_problem"]
    assert [h["outcome"] for h in doc["history"]] == [
        "deferred",
        "recorded",
        "recorded",
        "completed",
        "ignored",
        "after-completion",
    ]
    assert doc["event_log"]["completion_seconds"] == 10.0
    stalled = tally_json(stack, "status", f"{data.wf}/1.0.0/slow")
    assert stalled["state"] == "STALLED"


def test_runs_filters(stack, unique):
    data = known_data(unique)
    insert(stack, data)

    def runs(*flags: str) -> list[str]:
        doc = tally_json(stack, "runs", "--workflow", data.wf, *flags)
        return sorted(r["run_id"] for r in doc["runs"])

    poll(lambda: len(runs()) == 5, timeout=30, message="five runs in run_status")
    assert runs("--stalled") == ["slow"]
    assert runs("--failed") == ["bad"]
    assert runs("--incomplete") == ["busy", "lost", "slow"]
    assert runs("--stalled", "--failed") == ["bad", "slow"]
    assert runs("--since", "3h") == ["bad", "busy", "done", "lost", "slow"]
    assert runs("--since", "1m") == []
    assert len(runs("--limit", "2")) == 2


def test_query_command_lists_and_runs_documented_queries(stack, unique):
    listing = tally_json(stack, "query", "--list")
    names = {q["name"] for q in listing["queries"]}
    assert names == {p.stem for p in (ROOT / "bigquery" / "queries").glob("*.sql")}
    history = next(q for q in listing["queries"] if q["name"] == "run_history")
    assert history["params"][0] == {
        "name": "run_id",
        "type": "STRING",
        "default": None,
        "help": "the run id",
    }
    data = known_data(unique)
    insert(stack, data)
    doc = poll(
        lambda: tally_json(stack, "query", "stalled_runs", "--param", f"workflow={data.wf}")[
            "rows"
        ],
        timeout=30,
        message="the stalled run",
    )
    assert [r["run_id"] for r in doc] == ["slow"]


def test_reconcile_queues_a_request_on_object_events(stack, unique):
    names = stack.names
    observer = names.subscription(f"cli-reconcile-{unique}")
    subscriber = stack.subscriber()
    subscriber.create_subscription(
        request={
            "name": observer,
            "topic": names.topic(names.object_events_topic),
            "ack_deadline_seconds": 60,
        }
    )
    try:
        doc = tally_json(stack, "reconcile", "--prefix", f"rc-{unique}/")
        assert doc["queued"] is True and doc["message_id"]

        def request() -> Any:
            resp = subscriber.pull(
                request={"subscription": observer, "max_messages": 50, "return_immediately": True},
                timeout=10,
            )
            return [
                r.message
                for r in resp.received_messages
                if r.message.message_id == doc["message_id"]
            ]

        message = poll(request, timeout=30, message="the reconcile request")[0]
        assert dict(message.attributes) == {"tally-request": "reconcile", "prefix": f"rc-{unique}/"}
        assert json.loads(message.data) == {}
    finally:
        subscriber.delete_subscription(request={"subscription": observer})


def test_reconcile_in_process_dry_run_then_for_real(stack, unique):
    from tests.integration.platform_helpers import register, spec_with, wait_idle, write_outputs

    workflow = f"rc-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    wait_idle(stack)  # the registration's own reconcile request, done before the run exists
    prefix = f"{workflow}/1.0.0/run-1/"
    # Every notification of this run is lost: only reconciliation can announce it.
    stack.bridge.suppress = lambda m: m.attributes.get("objectId", "").startswith(prefix)
    try:
        write_outputs(
            stack,
            prefix,
            ["a.txt", "dir/b.txt", "c.csv", *(f"shards/part-{i}.parquet" for i in range(3))],
        )
        poll(
            lambda: len(stack.bridge.stats.suppressed) >= 6,
            timeout=30,
            message="the run's notifications suppressed",
        )
        wait_idle(stack)
    finally:
        stack.bridge.suppress = None
    run_key = f"{stack.outputs_bucket}/{prefix[:-1]}"

    dry = tally_json(stack, "reconcile", "--dry-run", "--prefix", f"{workflow}/")
    assert dry["dry_run"] is True and dry["announced"] == [run_key]
    assert not stack.completions.for_run(workflow, "1.0.0", "run-1")

    done = tally_json(stack, "reconcile", "--local", "--prefix", f"{workflow}/")
    assert done["announced"] == [run_key]
    poll(
        lambda: stack.completions.for_run(workflow, "1.0.0", "run-1"),
        timeout=30,
        message="the reconciled announcement",
    )
    again = tally_json(stack, "reconcile", "--local", "--prefix", f"{workflow}/")
    assert again["announced"] == [] and again["examined"] == 1
    assert len(stack.completions.for_run(workflow, "1.0.0", "run-1")) == 1


def test_replay_moves_only_matching_dead_letters_and_marks_them(stack, unique):
    names = stack.names
    publisher, subscriber = stack.publisher(), stack.subscriber()
    observer = names.subscription(f"cli-replay-{unique}")
    subscriber.create_subscription(
        request={
            "name": observer,
            "topic": names.topic(names.object_events_topic),
            "ack_deadline_seconds": 60,
        }
    )
    dead_letters = names.topic(names.dead_letter_topic)
    dead_sub = names.subscription(names.dead_letter_subscription)
    dead_attributes = {
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "object-events-push",
    }
    try:
        mine = [
            publisher.publish(
                dead_letters,
                json.dumps({"name": f"rp-{unique}/1.0.0/r/{n}.txt"}).encode(),
                eventType="OBJECT_FINALIZE",
                objectId=f"rp-{unique}/1.0.0/r/{n}.txt",
                bucketId="elsewhere",
                payloadFormat="JSON_API_V1",
                testRun=unique,
                **dead_attributes,
            ).result(30)
            for n in range(3)
        ]
        other = publisher.publish(dead_letters, b"other", testRun=f"other-{unique}").result(30)

        dry = tally_json(stack, "replay", "--dry-run", "--filter", f"testRun={unique}")
        assert dry["dry_run"] is True and dry["replayed"] == 0
        assert len(dry["matched"]) == 3
        assert all(m["attributes"]["tally-replayed"] == "true" for m in dry["matched"])

        first = tally_json(
            stack,
            "replay",
            "--filter",
            f"testRun={unique}",
            "--filter",
            f"objectId=rp-{unique}/*/[01].txt",
        )
        assert first["replayed"] == 2
        rest = tally_json(stack, "replay", "--filter", f"testRun={unique}")
        assert rest["replayed"] == 1
        again = tally_json(stack, "replay", "--filter", f"testRun={unique}")
        assert again["replayed"] == 0, "replayed dead letters are acknowledged"

        seen: dict[str, Any] = {}

        def replayed() -> bool:
            resp = subscriber.pull(
                request={"subscription": observer, "max_messages": 100, "return_immediately": True},
                timeout=10,
            )
            for r in resp.received_messages:
                if r.message.attributes.get("testRun") == unique:
                    seen[r.message.attributes["objectId"]] = r.message
            if resp.received_messages:
                subscriber.acknowledge(
                    request={
                        "subscription": observer,
                        "ack_ids": [r.ack_id for r in resp.received_messages],
                    }
                )
            return len(seen) == 3

        poll(replayed, timeout=30, message="three replayed messages on object-events")
        for message in seen.values():
            attributes = dict(message.attributes)
            assert attributes["tally-replayed"] == "true"
            assert not any(k.startswith("CloudPubSubDeadLetter") for k in attributes)
            assert attributes["eventType"] == "OBJECT_FINALIZE"
            assert attributes["bucketId"] == "elsewhere"
            assert json.loads(message.data)["name"] == attributes["objectId"]
        assert len(mine) == 3

        # The non-matching message was released, not acknowledged: it is still a dead letter.
        def still_there() -> bool:
            resp = subscriber.pull(
                request={"subscription": dead_sub, "max_messages": 100, "return_immediately": True},
                timeout=10,
            )
            ours = [r.ack_id for r in resp.received_messages if r.message.message_id == other]
            others = [r.ack_id for r in resp.received_messages if r.message.message_id != other]
            if others:
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": dead_sub,
                        "ack_ids": others,
                        "ack_deadline_seconds": 0,
                    }
                )
            if ours:
                subscriber.acknowledge(request={"subscription": dead_sub, "ack_ids": ours})
            return bool(ours)

        poll(still_there, timeout=30, message="the non-matching dead letter to remain")
    finally:
        subscriber.delete_subscription(request={"subscription": observer})
