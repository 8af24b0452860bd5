"""The storm: carry a plan out on a running platform while everything goes wrong at once.

Writers (8 threads) write the runs' objects wave by wave, in a shuffled order; each run's last
object (its closer: the last required output, or the failure marker) is written only once every
other write of the run is done, so the bucket holds the run's final state when it completes.
Every notification is published again 0 to 2 times (right after the write, or a wave later); the
handler crashes at each step boundary with the configured probability; registry and BigQuery
outage windows open at seeded offsets after their wave starts; the bridge drops every notification
of a few closers; malformed messages are mixed in. Waves start only when the delivery backlog is
low, so the outages hit deliveries that are being processed, not a queue that is still filling.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.plan import Malformed, Plan, RunPlan, Target, Window

WRITERS = 8
HIGH_WATER = 150  # undelivered notifications allowed before the next wave starts
FAULT_STEPS = ("after_listing", "after_claim", "after_publish", "after_mark", "before_logging")


def faults_setting(rate: float, seed: int) -> str:
    return ",".join(f"{step}={rate}" for step in FAULT_STEPS) + f";seed={seed}"


@dataclass
class Baseline:
    """Bridge and tap counters when the storm started: the storm's figures are differences."""

    acked: int
    dead: int
    suppressed: int
    attempts: int
    registry_503: int
    bigquery_503: int
    handler_log_offset: int
    started: float  # time.time()


@dataclass
class StormStats:
    objects: int = 0  # first writes (outputs, markers, unexpected objects)
    overwrites: int = 0
    duplicates: int = 0
    malformed_ids: dict[str, Malformed] = field(default_factory=dict)  # message id -> message
    notifications: int = 0  # expected from Storage for our writes (overwrites send two)
    windows: list[tuple[str, float, float]] = field(default_factory=list)  # (target, start, s)
    write_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    drained: bool = False

    @property
    def published(self) -> int:
        return self.notifications + self.duplicates + len(self.malformed_ids)


def _event_time(props: dict[str, Any]) -> str:
    stamp = str(props.get("updated") or props.get("timeCreated") or "")
    return stamp[:19] + "Z" if len(stamp) >= 19 else stamp


def finalize_message(props: dict[str, Any], overwrote: int | None) -> tuple[bytes, dict[str, str]]:
    """The notification Storage sends for a new object generation, as fake-gcs-server sends it."""
    attributes = {
        "bucketId": props["bucket"],
        "objectId": props["name"],
        "objectGeneration": str(props["generation"]),
        "eventType": "OBJECT_FINALIZE",
        "eventTime": _event_time(props),
        "payloadFormat": "JSON_API_V1",
    }
    if overwrote is not None:
        attributes["overwroteGeneration"] = str(overwrote)
    return json.dumps({**props, "kind": "storage#object"}).encode(), attributes


def delete_message(old: dict[str, Any], new_generation: int) -> tuple[bytes, dict[str, str]]:
    """The OBJECT_DELETE an overwrite causes for the generation it replaced."""
    data, attributes = finalize_message(old, None)
    attributes["eventType"] = "OBJECT_DELETE"
    attributes["overwrittenByGeneration"] = str(new_generation)
    return data, attributes


class Outages:
    """Switches the registry and BigQuery taps down for windows; overlapping windows nest."""

    def __init__(self, stack: Any, stats: StormStats) -> None:
        self._taps = {Target.REGISTRY: stack.registry_tap, Target.BIGQUERY: stack.bigquery_tap}
        self._depth = dict.fromkeys(self._taps, 0)
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._stats = stats

    def schedule(self, windows: list[Window]) -> None:
        for window in windows:
            timer = threading.Timer(window.delay, self._open, (window.target, window.duration))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def trigger(self, target: Target, duration: float) -> None:
        """Open a window now (the caller's request meets it), close it after `duration`."""
        started = time.time()
        self._switch(target, +1)

        def close() -> None:
            self._switch(target, -1)
            with self._lock:
                self._stats.windows.append((str(target), started, duration))

        timer = threading.Timer(duration, close)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def _switch(self, target: Target, delta: int) -> None:
        with self._lock:
            self._depth[target] += delta
            self._taps[target].down = self._depth[target] > 0

    def _open(self, target: Target, duration: float) -> None:
        started = time.time()
        self._switch(target, +1)
        try:
            time.sleep(duration)
        finally:
            self._switch(target, -1)
        with self._lock:
            self._stats.windows.append((str(target), started, duration))

    def finish(self) -> None:
        for timer in self._timers:
            timer.join()
        for tap in self._taps.values():
            tap.down = False


class Writers:
    """A work queue served by writer threads; tasks may enqueue follow-up tasks."""

    def __init__(self, count: int, on_error: Callable[[Exception], None]) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._on_error = on_error
        self._threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def put(self, task: Callable[[], None]) -> None:
        self._queue.put(task)

    def _serve(self) -> None:
        while (task := self._queue.get()) is not None:
            try:
                task()
            except Exception as exc:  # recorded; the checker reads the bucket as it is
                self._on_error(exc)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        self._queue.join()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class Storm:
    def __init__(self, stack: Any, plan: Plan, baseline: Baseline, deadline: float) -> None:
        self.stack = stack
        self.plan = plan
        self.baseline = baseline
        self.deadline = deadline
        self.stats = StormStats()
        self.bucket = stack.storage_client().bucket(stack.outputs_bucket)
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}
        self._props: dict[str, dict[str, Any]] = {}
        self._deferred: list[tuple[bytes, dict[str, str]]] = []
        self._rng = random.Random(plan.seed ^ 0x5EED)
        self._writers = Writers(WRITERS, self._error)
        self._outages = Outages(stack, self.stats)

    def _error(self, exc: Exception) -> None:
        with self._lock:
            self.stats.write_errors.append(f"{type(exc).__name__}: {exc}")

    # -- publishing ----------------------------------------------------------------------------
    def _publish(self, data: bytes, attributes: dict[str, str]) -> str:
        return self.stack.publish_object_event(data, attributes)

    def _duplicate(self, run: RunPlan, path: str, message: tuple[bytes, dict[str, str]]) -> None:
        copies = run.copies.get(path, 0)
        if not copies:
            return
        if self.plan.duplicate_deferred.get((run.index, path)):
            with self._lock:
                self._deferred.extend([message] * copies)
            return
        for _ in range(copies):
            self._publish(*message)
        with self._lock:
            self.stats.duplicates += copies

    def _deferred_tasks(self) -> list[Callable[[], None]]:
        """Duplicates held back from the previous wave, to be sent among this wave's writes."""
        with self._lock:
            batch, self._deferred = self._deferred, []
        batch.sort(key=lambda m: (m[1]["objectId"], m[1]["eventType"], m[1]["objectGeneration"]))
        return [lambda m=message: self._send_duplicate(m) for message in batch]

    def _send_duplicate(self, message: tuple[bytes, dict[str, str]]) -> None:
        self._publish(*message)
        with self._lock:
            self.stats.duplicates += 1

    def _send_malformed(self, message: Malformed) -> None:
        message_id = self._publish(message.data, message.attributes)
        with self._lock:
            self.stats.malformed_ids[message_id] = message

    # -- writing -------------------------------------------------------------------------------
    def _upload(self, name: str, content: bytes) -> dict[str, Any]:
        for attempt in range(4):
            blob = self.bucket.blob(name)
            try:
                blob.upload_from_string(content, content_type="application/octet-stream")
                return dict(blob._properties)
            except Exception:
                if attempt == 3:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _write(self, run: RunPlan, path: str) -> None:
        name = run.prefix() + path
        content = (run.marker_text if path == "_FAILED" else f"{name} #1").encode()
        props = self._upload(name, content)
        with self._lock:
            self._props[name] = props
            self.stats.objects += 1
            self.stats.notifications += 1
        self._duplicate(run, path, finalize_message(props, None))
        if path in run.overwrites:
            self._writers.put(lambda: self._overwrite(run, path))
        elif path != run.closer:
            self._done(run)

    def _overwrite(self, run: RunPlan, path: str) -> None:
        name = run.prefix() + path
        old = self._props[name]
        props = self._upload(name, f"{name} #2".encode())
        with self._lock:
            self.stats.overwrites += 1
            self.stats.notifications += 2  # OBJECT_DELETE of the old generation, OBJECT_FINALIZE
        generation = int(props["generation"])
        self._duplicate(run, path, delete_message(old, generation))
        self._duplicate(run, path, finalize_message(props, int(old["generation"])))
        self._done(run)

    def _done(self, run: RunPlan) -> None:
        with self._lock:
            self._pending[run.index] -= 1
            ready = self._pending[run.index] == 0
        if ready and run.closer is not None:
            self._writers.put(lambda: self._write(run, run.closer or ""))

    # -- waves ---------------------------------------------------------------------------------
    def backlog(self) -> int:
        """Notifications published and not yet finished (acknowledged, dead-lettered or
        suppressed), at most. The bridge also finishes tally's own: an announced run's manifest
        is written twice (claim, mark: three notifications; a takeover adds two more), so three
        per announced run are taken off."""
        b, s = self.baseline, self.stack.bridge.stats
        finished = (
            (len(s.acked) - b.acked)
            + (len(s.dead_lettered) - b.dead)
            + (len(s.suppressed) - b.suppressed)
        )
        root = self.plan.root
        announced = {
            c.attributes.get("idempotency_key")
            for c in self.stack.completions.snapshot()
            if c.attributes.get("workflow", "").startswith(root)
        }
        return self.stats.published - (finished - 3 * len(announced))

    def _wait_backlog(self, limit: int, stall_seconds: float = 90.0) -> None:
        """Until at most `limit` notifications are undelivered, or nothing moved for a while."""
        last, moved = self.backlog(), time.monotonic()
        while last > limit and time.monotonic() < min(self.deadline, moved + stall_seconds):
            time.sleep(0.1)
            now = self.backlog()
            if now != last:
                last, moved = now, time.monotonic()

    def _wave(self, wave: int) -> None:
        runs = self.plan.runs_in_wave(wave)
        first_runs = self.plan.first_runs()
        tasks: list[Callable[[], None]] = []
        openers: list[Callable[[], None]] = []  # a new version's first write opens the wave
        for run in runs:
            self._pending[run.index] = len(run.writes)
            run_tasks = [lambda r=run, p=path: self._write(r, p) for path in run.writes]
            if not run.writes and run.closer is not None:
                run_tasks = [lambda r=run: self._write(r, r.closer or "")]
            if run.index in first_runs and run_tasks:
                openers.append(run_tasks.pop(0))
            tasks += run_tasks
        tasks += [lambda m=m: self._send_malformed(m) for m in self.plan.malformed.get(wave, [])]
        tasks += self._deferred_tasks()
        self._rng.shuffle(tasks)
        tasks = openers + tasks
        timed = [w for w in self.plan.windows if w.wave == wave and w.target is Target.BIGQUERY]
        self._outages.schedule(timed)
        for task in tasks:
            self._writers.put(task)
        self._writers.join()

    def _registry_triggers(self) -> dict[str, float]:
        """Object name -> window duration: a registry window opens when the bridge starts
        delivering the first notification of the first run of a version introduced in a
        wave with a registry window (that delivery needs the spec: the handler has none)."""
        triggers: dict[str, float] = {}
        first_runs = self.plan.first_runs()
        for window in self.plan.windows:
            if window.target is not Target.REGISTRY:
                continue
            runs = [r for r in self.plan.runs_in_wave(window.wave) if r.index in first_runs]
            if runs:
                run = runs[0]
                triggers[run.prefix() + (run.writes or [run.closer or ""])[0]] = window.duration
        return triggers

    def _gate(self) -> Callable[[Any], bool]:
        """The bridge's suppress hook: drops the suppressed closers' notifications, and opens
        the registry windows as their trigger notifications go out."""
        suppressed = {r.prefix() + (r.closer or "") for r in self.plan.runs if r.suppressed}
        triggers = self._registry_triggers()
        lock = threading.Lock()

        def gate(message: Any) -> bool:
            name = message.attributes.get("objectId")
            if name in triggers and message.attributes.get("eventType") == "OBJECT_FINALIZE":
                with lock:
                    duration = triggers.pop(name, None)
                if duration is not None:
                    self._outages.trigger(Target.REGISTRY, duration)
            return name in suppressed

        return gate

    def run(self, progress: Callable[[str], None]) -> StormStats:
        started = time.monotonic()
        self.stack.bridge.suppress = self._gate()
        try:
            for wave in range(self.plan.waves):
                self._wait_backlog(HIGH_WATER)
                self._wave(wave)
                progress(
                    f"wave {wave + 1}/{self.plan.waves} written ({self.stats.objects} objects,"
                    f" backlog {self.backlog()}, {time.monotonic() - started:.0f} s)"
                )
            for task in self._deferred_tasks():
                self._writers.put(task)
            self._writers.join()
            self._wait_backlog(0)
            self.stats.drained = wait_idle(self.stack, self.deadline)
        finally:
            self._writers.stop()
            self._outages.finish()
        self.stats.seconds = time.monotonic() - started
        return self.stats


def wait_idle(stack: Any, deadline: float, streak_seconds: float = 1.0) -> bool:
    """The bridge has had nothing in flight, due or pulled for `streak_seconds`."""
    since: float | None = None
    while time.monotonic() < deadline:
        if stack.bridge.idle():
            since = since or time.monotonic()
            if time.monotonic() - since >= streak_seconds:
                return True
        else:
            since = None
        time.sleep(0.05)
    return False
