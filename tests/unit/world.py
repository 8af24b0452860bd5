"""A world for the announcement protocol without servers: the handler and reconciliation over the
in-memory ports, a clock the test moves, and notifications as Cloud Storage sends them.

Used by the announcer's unit tests and the model-based (stateful) test. Crashes are real to the
protocol: an operation raises ``Crash`` half-way through a delivery, nothing of that delivery runs
after it, and the message stays unacknowledged (the test redelivers it later).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tally_handler.announce import Announcer
from tally_handler.coalesce import Coalescer, Gate
from tally_handler.completeness import Entry, ListRequest
from tally_handler.config import Config
from tally_handler.delivery import Delivery, EventType, Notification, Reconcile, Source, rfc3339
from tally_handler.handler import Handler, PresenceCache
from tally_handler.layout import TALLY_FOLDER
from tally_handler.manifest import RECORD_NAME, Record
from tally_handler.memory import MemoryEventLog, MemoryPublisher, MemoryStorage
from tally_handler.outcomes import Handled, Outcome
from tally_handler.reconcile import ReconcileReport, reconcile_runs
from tally_handler.rows import StorageOps
from tally_handler.spec import Spec

BUCKET = "outs"
WORKFLOW, VERSION = "wf", "1"
SPEC = Spec.from_json(
    {
        "workflow": WORKFLOW,
        "version": VERSION,
        "expected_outputs": [
            {"path": "a.txt"},
            {"path": "b.txt"},
            {"path": "notes.txt", "required": False},
            {"pattern": "shards/*.bin", "count": 2},
        ],
    }
)
REQUIRED = ("a.txt", "b.txt", "shards/0.bin", "shards/1.bin")
OPTIONAL = ("notes.txt",)
LEASE = 600
QUIET = 30


class Crash(BaseException):
    """The process died here: nothing after this point of the delivery happens (a
    BaseException, so that no `except Exception` in the code can swallow a death)."""


def config(**overrides: str) -> Config:
    env = {
        "TALLY_PROJECT": "p",
        "TALLY_OUTPUTS_BUCKET": BUCKET,
        "TALLY_REGISTRY_URL": "http://registry",
        "TALLY_COMPLETIONS_TOPIC": "completions",
        "TALLY_EVENTS_TABLE": "p.d.events",
        "TALLY_RUNS_TABLE": "p.d.runs",
        "TALLY_CLAIM_LEASE_SECONDS": str(LEASE),
        "TALLY_REVISION_QUIET_SECONDS": str(QUIET),
    } | overrides
    return Config.from_env(env)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CrashingStorage(MemoryStorage):
    """Storage that can crash the process after a given number of further operations (before an
    operation, or right after a write took effect), and that notifies every change as Cloud
    Storage does (``on_change``), tally's own writes included."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.crash_in: int | None = None
        self.crash_after_publish = False
        self.on_change: Callable[[str, str, int, EventType, int | None], None] = (
            lambda bucket, name, generation, event, overwritten_by: None
        )

    def tick(self) -> None:
        if self.crash_in is not None:
            if self.crash_in == 0:
                self.crash_in = None
                raise Crash("storage")
            self.crash_in -= 1

    def exists(self, *args: Any, **kwargs: Any) -> bool:
        self.tick()
        return super().exists(*args, **kwargs)

    def download(self, *args: Any, **kwargs: Any) -> Any:
        self.tick()
        return super().download(*args, **kwargs)

    def list_page(self, *args: Any, **kwargs: Any) -> Any:
        self.tick()
        return super().list_page(*args, **kwargs)

    def write(self, bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        self.tick()
        old = self.objects.get((bucket, name))
        generation = super().write(bucket, name, *args, **kwargs)
        if old is not None:
            self.on_change(bucket, name, old.generation, EventType.OBJECT_DELETE, generation)
        self.on_change(bucket, name, generation, EventType.OBJECT_FINALIZE, None)
        self.tick()
        return generation

    def delete(self, bucket: str, name: str, *args: Any, **kwargs: Any) -> bool:
        self.tick()
        old = self.objects.get((bucket, name))
        deleted = super().delete(bucket, name, *args, **kwargs)
        if deleted and old is not None:
            self.on_change(bucket, name, old.generation, EventType.OBJECT_DELETE, None)
        self.tick()
        return deleted


class CrashingPublisher(MemoryPublisher):
    def __init__(self, storage: CrashingStorage) -> None:
        super().__init__()
        self.storage = storage

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        self.storage.tick()
        message_id = super().publish(data, attributes)
        if self.storage.crash_after_publish:  # the claimant dies between publish and mark
            self.storage.crash_after_publish = False
            raise Crash("after the publish")
        self.storage.tick()
        return message_id


class CrashingEventLog(MemoryEventLog):
    def __init__(self, storage: CrashingStorage) -> None:
        super().__init__()
        self.storage = storage

    def write_run(self, row: dict[str, Any]) -> None:
        self.storage.tick()
        super().write_run(row)


@dataclass
class World:
    clock: Clock = field(default_factory=Clock)
    cfg: Config = field(default_factory=config)
    instances: int = 2
    spec: Spec = SPEC

    def __post_init__(self) -> None:
        self.storage = CrashingStorage(self.clock)
        self.publisher = CrashingPublisher(self.storage)
        self.event_log = CrashingEventLog(self.storage)
        self.coalescer_seconds = 0.0  # the coalescing gates' own clock: waits advance it
        self.on_wait: Callable[[Handler], None] | None = None  # the model's hand-over hook
        self.handlers = [self.new_instance() for _ in range(self.instances)]
        self.sequence = 0
        self.pending: list[Delivery] = []  # every notification Storage sent, not yet acknowledged
        self.storage.on_change = self._notify

    def _notify(
        self, bucket: str, name: str, generation: int, event: EventType, overwritten_by: int | None
    ) -> None:
        stored = self.storage.get(bucket, name)
        md5 = stored.md5 if stored is not None and event is EventType.OBJECT_FINALIZE else None
        self.pending.append(self.message(name, generation, event, overwritten_by, md5))

    def new_instance(self) -> Handler:
        announcer = Announcer(
            self.cfg, self.storage, self.publisher, self.event_log, "test", self.clock
        )
        handler: Handler

        def wait(_condition: Any, timeout: float | None) -> None:
            """A delivery waiting at the coalescing gate: time passes (no sleep), and the
            model may let a newer delivery arrive meanwhile."""
            self.coalescer_seconds += 1.0 if timeout is None else timeout
            if self.on_wait is not None:
                self.on_wait(handler)

        coalescer = Coalescer(Gate(), lambda: self.coalescer_seconds, wait)
        handler = Handler(
            self.cfg,
            self.storage,
            lambda w, v: self.spec,
            announcer,
            self.clock,
            PresenceCache(100),
            coalescer=coalescer,
        )
        return handler

    def restart(self, index: int) -> None:
        """An instance replaced as Cloud Run would: its memory is gone."""
        self.handlers[index] = self.new_instance()

    @property
    def prefix(self) -> str:
        return f"{WORKFLOW}/{VERSION}/"

    def run_prefix(self, run_id: str) -> str:
        return f"{self.prefix}{run_id}/"

    # -- the bucket, as workflows and users change it ----------------------------------------
    def write(self, run_id: str, path: str, data: bytes = b"x") -> Delivery:
        """Write an object; return its finalize notification (an overwrite's delete of the old
        generation, which Storage also sends, is ``last_overwritten``). Both are also queued in
        ``pending``, as every notification is."""
        name = self.run_prefix(run_id) + path
        before = len(self.pending)
        self.storage.put(BUCKET, name, data)
        sent = self.pending[before:]
        self.last_overwritten = sent[0] if len(sent) == 2 else None
        return sent[-1]

    def delete(self, run_id: str, path: str) -> Delivery | None:
        before = len(self.pending)
        if not self.storage.remove(BUCKET, self.run_prefix(run_id) + path):
            return None
        return self.pending[before]

    def message(
        self,
        name: str,
        generation: int,
        event_type: EventType,
        overwritten_by: int | None = None,
        md5: str | None = None,
    ) -> Delivery:
        self.sequence += 1
        now = rfc3339(self.clock())
        return Delivery(
            Source.PUBSUB_PUSH,
            f"m{self.sequence}",
            delivery_attempt=1,
            publish_time=now,
            notification=Notification(
                BUCKET,
                name,
                generation,
                event_type,
                event_time=now,
                md5=md5,
                overwritten_by_generation=overwritten_by,
            ),
        )

    # -- the platform ----------------------------------------------------------------------------
    def deliver(
        self,
        delivery: Delivery,
        instance: int = 0,
        crash_after: int | None = None,
        crash_after_publish: bool = False,
    ):
        """One attempt; returns the Handled, or None when the process crashed (not acknowledged).
        ``crash_after``: Storage operations before the crash; ``crash_after_publish``: die right
        after publishing an announcement (the window between publish and mark)."""
        self.storage.crash_in = crash_after
        self.storage.crash_after_publish = crash_after_publish
        try:
            return self.handlers[instance].notification(delivery, StorageOps())
        except Crash:
            self.restart(instance)
            return None
        finally:
            self.storage.crash_in = None
            self.storage.crash_after_publish = False

    def reconcile(
        self, instance: int = 0, crash_after: int | None = None, **request: Any
    ) -> ReconcileReport | None:
        self.sequence += 1
        delivery = Delivery(
            Source.PUBSUB_PUSH,
            f"r{self.sequence}",
            publish_time=rfc3339(self.clock()),
            reconcile=Reconcile(**request),
        )
        self.storage.crash_in = crash_after
        try:
            return reconcile_runs(
                self.handlers[instance],
                delivery,
                BUCKET,
                delivery.reconcile,  # type: ignore[arg-type]
                1000,
                StorageOps(),
                now=self.clock(),
                concurrent=False,  # a crash stops the whole process, as in one thread
            )
        except Crash:
            self.restart(instance)
            return None
        finally:
            self.storage.crash_in = None

    # -- observations ------------------------------------------------------------------------
    def record(self, run_id: str) -> Record | None:
        found = self.storage.get(BUCKET, self.run_prefix(run_id) + RECORD_NAME)
        return None if found is None else Record.from_bytes(found.data)

    def entries(self, run_id: str) -> list[Entry]:
        """The run folder as one listing (tally's own _tally/ objects left out)."""
        entries: list[Entry] = []
        token = None
        while True:
            page, token = MemoryStorage.list_page(
                self.storage,
                BUCKET,
                self.run_prefix(run_id),
                ListRequest(None, None, 1000, token),
                StorageOps(),
            )
            entries.extend(page)
            if not token:
                return [e for e in entries if not e.path.startswith(TALLY_FOLDER)]

    def manifest(self, run_id: str) -> dict[str, Any] | None:
        found = self.storage.get(BUCKET, self.run_prefix(run_id) + self.cfg.manifest_name)
        return None if found is None else json.loads(found.data)

    def messages(self, run_id: str) -> list[tuple[bytes, dict[str, str]]]:
        return [m for m in self.publisher.messages if m[1]["run_id"] == run_id]

    def contents_per_key(self) -> dict[str, set[bytes]]:
        by_key: dict[str, set[bytes]] = {}
        for data, attributes in self.publisher.messages:
            by_key.setdefault(attributes["idempotency_key"], set()).add(data)
        return by_key

    def current_outputs(self, run_id: str) -> dict[str, int]:
        prefix = self.run_prefix(run_id)
        return {
            name[len(prefix) :]: stored.generation
            for (bucket, name), stored in self.storage.objects.items()
            if bucket == BUCKET
            and name.startswith(prefix)
            and self.spec.expects(name[len(prefix) :]) is not None
        }


def outcome(result: Handled | None) -> Outcome | None:
    return None if result is None else result.outcome
