"""The local platform itself: the emulator facts tally relies on, the push bridge, start-up
failures and clean shutdown."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from google.api_core.exceptions import PreconditionFailed

from devstack import Stack, StackError
from devstack.bridge import PushBridge
from devstack.processes import processes_with_stack_id
from tests.conftest import ROOT, poll

pytestmark = pytest.mark.integration


def test_storage_create_if_absent_has_exactly_one_winner(stack, unique):
    bucket = stack.storage_client().bucket(stack.outputs_bucket)

    def create(args: tuple[int, int]) -> bool:
        round_, writer = args
        try:
            bucket.blob(f"race-{unique}/{round_}/claim").upload_from_string(
                f"writer {writer}", if_generation_match=0
            )
            return True
        except PreconditionFailed:
            return False

    with cf.ThreadPoolExecutor(32) as pool:
        for round_ in range(20):
            winners = sum(pool.map(create, [(round_, w) for w in range(32)]))
            assert winners == 1, f"round {round_}: {winners} creators won"


class _Recorder(BaseHTTPRequestHandler):
    """A push endpoint that fails the first `fail_first` attempts of each message."""

    bodies: list[tuple[float, bytes]]
    fail_first: dict[str, int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((time.monotonic(), body, dict(self.headers)))  # type: ignore[attr-defined]
        envelope = json.loads(body)
        attempt = envelope["deliveryAttempt"]
        fail = int(envelope["message"]["attributes"].get("fail_first", "0"))
        self.send_response(500 if attempt <= fail else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.bodies = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_push_bridge_retries_with_backoff_dead_letters_and_acks(
    stack, unique, recorder, tmp_path, monkeypatch
):
    names = stack.names
    topic, sub = names.topic(f"bridge-{unique}"), names.subscription(f"bridge-{unique}")
    dlq_topic, dlq_sub = (
        names.topic(f"bridge-dlq-{unique}"),
        names.subscription(f"bridge-dlq-{unique}"),
    )
    publisher, subscriber = stack.publisher(), stack.subscriber()
    for t, s in ((topic, sub), (dlq_topic, dlq_sub)):
        publisher.create_topic(name=t)
        subscriber.create_subscription(request={"name": s, "topic": t, "ack_deadline_seconds": 600})
    url = f"http://127.0.0.1:{recorder.server_address[1]}/"
    bridge = PushBridge(
        subscriber,
        publisher,
        sub,
        url,
        dlq_topic,
        max_attempts=4,
        min_backoff=0.1,
        max_backoff=1.0,
        concurrency=2,
    )
    bridge.start()
    try:
        ok_id = publisher.publish(topic, b'{"a": 1}', fail_first="2", kind="retried").result(10)
        dead_id = publisher.publish(topic, b"dead", fail_first="99", kind="dead").result(10)
        poll(
            lambda: ok_id in bridge.stats.acked and dead_id in bridge.stats.dead_lettered,
            timeout=30,
            message="the bridge to ack one message and dead-letter the other",
        )
    finally:
        bridge.stop()

    by_message: dict[str, list[tuple[float, dict]]] = {}
    for at, body, headers in recorder.bodies:
        envelope = json.loads(body)
        by_message.setdefault(envelope["message"]["messageId"], []).append((at, envelope))
        assert headers["Content-Type"] == "application/json"
    ok = by_message[ok_id]
    assert [e["deliveryAttempt"] for _, e in ok] == [1, 2, 3]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ok)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, f"backoff must grow: {gaps}"
    # The push envelope, key for key, as Pub/Sub sends it.
    envelope = ok[0][1]
    assert set(envelope) == {"message", "subscription", "deliveryAttempt"}
    assert set(envelope["message"]) == {
        "attributes",
        "data",
        "messageId",
        "message_id",
        "publishTime",
        "publish_time",
    }
    assert envelope["subscription"] == sub
    assert envelope["message"]["attributes"] == {"fail_first": "2", "kind": "retried"}
    assert [e["deliveryAttempt"] for _, e in by_message[dead_id]] == [1, 2, 3, 4]

    response = subscriber.pull(request={"subscription": dlq_sub, "max_messages": 10}, timeout=10)
    dead = [r.message for r in response.received_messages]
    assert len(dead) == 1 and dead[0].data == b"dead"
    assert dead[0].attributes["kind"] == "dead"
    assert dead[0].attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "4"

    # functions-framework's own conversion accepts the envelope as a messagePublished CloudEvent.
    import functions_framework

    source = ROOT / "tests" / "functions" / "cloud_event_echo" / "main.py"
    monkeypatch.setenv("ECHO_FILE", str(tmp_path / "event.json"))
    # create_app writes FUNCTION_TARGET and FUNCTION_SIGNATURE_TYPE into os.environ: undone at
    # teardown, or a function this process starts later (the quick benchmark's baseline) would
    # inherit them and serve CloudEvents, refusing every push envelope.
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "FUNCTION_TRIGGER_TYPE"):
        monkeypatch.setenv(name, "")
    app = functions_framework.create_app("echo", str(source), "cloudevent")
    resp = app.test_client().post("/projects/p/topics/t", json=envelope)
    assert resp.status_code == 200, resp.data
    event = json.loads((tmp_path / "event.json").read_text())
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["id"] == ok_id
    assert event["data"]["message"]["attributes"]["kind"] == "retried"


def test_missing_binary_is_named_and_nothing_is_left_running(tmp_path):
    platform = Stack(
        state_dir=tmp_path, environ={}, export_env=False, pstest_binary=Path("/nonexistent/pstest")
    )
    with pytest.raises(StackError) as info:
        platform.start()
    assert "pubsub" in str(info.value) and "make install" in str(info.value)
    assert platform.leftover_processes() == []


def test_unreachable_external_emulator_is_named(tmp_path):
    from devstack.processes import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    platform = Stack(state_dir=tmp_path, environ={"STORAGE_EMULATOR_HOST": dead}, export_env=False)
    with pytest.raises(StackError) as info:
        platform.start()
    assert "storage" in str(info.value) and dead in str(info.value)
    poll(
        lambda: platform.leftover_processes() == [],
        timeout=10,
        message="every started process to end",
    )


def test_ctrl_c_stops_every_process(tmp_path):
    # The id is printed inside the try: a Ctrl-C that lands right after it (a loaded machine is
    # slow to reach the sleep) must still stop the platform, not kill Python with SIGINT.
    script = (
        "import sys; from devstack import Stack\n"
        f"s = Stack(state_dir=__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "try:\n"
        "    s.start(); print(s.stack_id, flush=True)\n"
        "    __import__('time').sleep(600)\n"
        "except KeyboardInterrupt:\n    s.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.pop("TALLY_BIGQUERY_ENDPOINT", None)
    errors = (tmp_path / "stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=errors,
        cwd=ROOT,
        env=env,
        text=True,
    )
    try:
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=180), "the platform did not start within 180 s"
        stack_id = proc.stdout.readline().strip()
        assert stack_id, (tmp_path / "stderr").read_text()[-3000:]
        assert processes_with_stack_id(stack_id), "no platform process found while running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        proc.kill()
        proc.wait()
    poll(
        lambda: processes_with_stack_id(stack_id) == [],
        timeout=30,
        message=f"every process of stack {stack_id} to end",
    )


def test_a_message_older_than_ten_minutes_is_still_delivered(recorder):
    """Cloud Pub/Sub keeps an undelivered message 7 days; Debian's pstest dropped it after 10
    minutes (the Makefile patches that). The emulator's clock is moved on by its -clock-control
    hook (publish times, retention and deadlines all read that clock), so nothing waits."""
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    from devstack.stack import PSTEST

    emulator = subprocess.Popen(
        [str(PSTEST), "-clock-control"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    bridge = None
    try:
        address = emulator.stdout.readline().strip()
        publisher = pubsub_v1.PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(address))
        )
        subscriber = pubsub_v1.SubscriberClient(
            transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(address))
        )
        topic, sub = "projects/p/topics/events", "projects/p/subscriptions/events"
        dlq = "projects/p/topics/dead"
        for name in (topic, dlq):
            publisher.create_topic(name=name)
        subscriber.create_subscription(
            request={"name": sub, "topic": topic, "ack_deadline_seconds": 60}
        )

        def advance(duration: str) -> None:
            emulator.stdin.write(f"advance {duration}\n")
            emulator.stdin.flush()
            assert emulator.stdout.readline().startswith("clock "), "the clock did not move"

        waited = publisher.publish(topic, b"waited", age="11m").result(10)
        advance("11m")  # 11 minutes undelivered: Debian's build would drop it at the next pull
        url = f"http://127.0.0.1:{recorder.server_address[1]}/"
        bridge = PushBridge(subscriber, publisher, sub, url, dlq, concurrency=1)
        bridge.start()
        poll(lambda: waited in bridge.stats.acked, timeout=30, message="the 11-minute-old message")

        # The control: past 7 days the message is dropped, as in the cloud (so the clock reaches
        # the retention check, and retention is 7 days, not unlimited).
        bridge.stop()
        expired = publisher.publish(topic, b"expired", age="7d").result(10)
        advance(f"{7 * 24 + 1}h")
        bridge.start()
        kept = publisher.publish(topic, b"fresh", age="0").result(10)
        poll(lambda: kept in bridge.stats.acked, timeout=30, message="a fresh message")
        assert expired not in bridge.stats.acked and expired not in bridge.stats.dead_lettered
    finally:
        if bridge is not None:
            bridge.stop()
        emulator.terminate()
        emulator.wait(10)
    delivered = [json.loads(body)["message"]["messageId"] for _, body, _ in recorder.bodies]
    assert waited in delivered and expired not in delivered
