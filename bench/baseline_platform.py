"""The baseline's own slice of the local platform, next to tally's.

fake-gcs-server notifies for one bucket only, so the baseline gets its own Storage process: a
second fake-gcs-server (memory backend) publishing the finalize notifications of bucket
`baseline-outputs` to topic `baseline-object-events` on the platform's Pub/Sub emulator. A push
bridge of its own (devstack.bridge.PushBridge, the same code and concurrency as tally's) delivers
them to bench/baseline.py served by functions-framework; a Tap in front of its Storage counts its
requests independently of its own counters; a collector sees every completion message.

    platform Pub/Sub (pstest) ─┬─ object-events ──────────► bridge ──► tally's event handler
                               └─ baseline-object-events ─► bridge ──► bench/baseline.py
    fake-gcs-server #1 (tally-outputs)      fake-gcs-server #2 (baseline-outputs)

The driver writes the same outputs, in the same order, with the same writers, to both buckets.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from devstack.bridge import PushBridge
from devstack.processes import STACK_ID_VAR, ManagedProcess, free_port
from devstack.resources import ROOT
from devstack.stack import CompletionCollector, Stack, fake_gcs_command, http_ok
from devstack.tap import Tap, storage_request_kind

BUCKET = "baseline-outputs"
EVENTS_TOPIC = "baseline-object-events"
COMPLETIONS_TOPIC = "baseline-completions"
DEAD_LETTER_TOPIC = "baseline-object-events-dead-letter"
PUSH_SUBSCRIPTION = "baseline-object-events-push"
COMPLETIONS_SUBSCRIPTION = "baseline-completions-all"
FUNCTION_SOURCE = ROOT / "bench" / "baseline.py"


class BaselinePlatform:
    """Start with `start()` (after the tally Stack it shares Pub/Sub and the registry with)."""

    def __init__(self, stack: Stack, state_dir: Path, concurrency: int = 8) -> None:
        self.stack = stack
        self.names = stack.names
        self.state_dir = state_dir
        self.concurrency = concurrency
        self.events_log = state_dir / "baseline-events.jsonl"
        self.storage_url = self.function_url = ""
        self._processes: list[ManagedProcess] = []
        self._client: Any = None
        self.tap: Tap | None = None
        self.bridge: PushBridge | None = None
        self.completions: CompletionCollector | None = None

    @property
    def bucket(self) -> str:
        return BUCKET

    def __enter__(self) -> BaselinePlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def storage_client(self) -> Any:
        """A client of the baseline's Storage, straight (not through the tap): the writers'."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self._client = storage.Client(
                project=self.names.project,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.storage_url},
            )
        return self._client

    def start(self) -> BaselinePlatform:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # FUNCTION_*: functions-framework reads its target and signature type from them
            if not k.startswith(("TALLY_", "BASELINE_", "FUNCTION_"))
            and not k.endswith("_EMULATOR_HOST")
        }
        env.update({STACK_ID_VAR: self.stack.stack_id, "PYTHONUNBUFFERED": "1", **extra})
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        proc = ManagedProcess(name, argv, log_dir, self._env(env), cwd=ROOT)
        proc.start()
        self._processes.append(proc)
        return proc

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.events_log.write_text("")
        self._create_pubsub()  # before Storage: it publishes to the topic from the first write
        port = free_port()
        self.storage_url = f"http://127.0.0.1:{port}"
        storage = self._spawn(
            "baseline-storage",
            # The baseline's trigger is google.storage.object.finalize, as proposed.
            fake_gcs_command(port, self.names.project, EVENTS_TOPIC, BUCKET, "finalize"),
            {"PUBSUB_EMULATOR_HOST": self.stack.pubsub_host},
        )
        storage.wait_ready(lambda: http_ok(f"{self.storage_url}/storage/v1/b"), 60)
        self.storage_client().create_bucket(BUCKET)
        self.tap = Tap("baseline-storage", self.storage_url, storage_request_kind)
        self.tap.start()
        port = free_port()
        self.function_url = f"http://127.0.0.1:{port}"
        function = self._spawn(
            "baseline-function",
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--target=handle",
                f"--source={FUNCTION_SOURCE}",
                "--host=127.0.0.1",
                f"--port={port}",
            ],
            {
                "BASELINE_PROJECT": self.names.project,
                "BASELINE_REGISTRY_URL": self.stack.registry_url,
                "BASELINE_COMPLETIONS_TOPIC": COMPLETIONS_TOPIC,
                "BASELINE_EVENTS_LOG": str(self.events_log),
                "STORAGE_EMULATOR_HOST": self.tap.url,
                "PUBSUB_EMULATOR_HOST": self.stack.pubsub_host,
            },
        )
        function.wait_ready(lambda: http_ok(f"{self.function_url}/healthz"), 60)
        subscriber, publisher = self.stack.subscriber(), self.stack.publisher()
        self.bridge = PushBridge(
            subscriber,
            publisher,
            self.names.subscription(PUSH_SUBSCRIPTION),
            self.function_url,
            self.names.topic(DEAD_LETTER_TOPIC),
            max_attempts=self.stack.max_attempts,
            min_backoff=self.stack.min_backoff,
            max_backoff=self.stack.max_backoff,
            concurrency=self.concurrency,
        )
        self.bridge.start()
        self.completions = CompletionCollector(
            subscriber, self.names.subscription(COMPLETIONS_SUBSCRIPTION)
        )
        self.completions.start()

    def _create_pubsub(self) -> None:
        from google.api_core.exceptions import AlreadyExists

        publisher, subscriber = self.stack.publisher(), self.stack.subscriber()
        for topic in (EVENTS_TOPIC, COMPLETIONS_TOPIC, DEAD_LETTER_TOPIC):
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(name=self.names.topic(topic))
        for sub, topic in (
            (PUSH_SUBSCRIPTION, EVENTS_TOPIC),
            (COMPLETIONS_SUBSCRIPTION, COMPLETIONS_TOPIC),
        ):
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={
                        "name": self.names.subscription(sub),
                        "topic": self.names.topic(topic),
                        "ack_deadline_seconds": 600,
                    }
                )

    def stop(self) -> None:
        for part in (self.bridge, self.completions):
            if part is not None:
                part.stop()
        for proc in reversed(self._processes):
            proc.stop()
        self._processes.clear()
        if self.tap is not None:
            self.tap.stop()
        self.bridge = self.completions = self.tap = None
        self._client = None
