"""The storm: carry a plan out on a running platform while everything goes wrong at once.

Writers (8 threads) write the runs' objects wave by wave, in a shuffled order; each run's last
object (its closer: the last required output, or the failure marker) is written only once every
other write of the run is done, so the bucket holds the run's final state when it completes.
Every notification is published again 0 to 2 times (right after the write, or a wave later); the
handler crashes at each step boundary with the configured probability; registry and BigQuery
outage windows open at seeded offsets after their wave starts; the bridge drops every notification
of a few closers; malformed messages are mixed in. Waves start only when the delivery backlog is
low, so the outages hit deliveries that are being processed, not a queue that is still filling.

The real faults (issue 13) come on top: handler instances are killed with SIGKILL (at seeded
moments, and as completions appear: between publish and mark), outputs are deleted and written
again before completion, changed after it (rewritten, deleted, optional ones added late), users
delete and edit manifests, some workflows write their own `output.json`, BigQuery and the registry
go down for longer than the push retry span, and a few versions are registered only after their
runs' outputs landed. Every message the bridge takes is recorded (its attributes), so the checker
can tell a message the platform lost from one it delivered or dead-lettered.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tally_handler.faults import Step

from tests.chaos.plan import (
    FOREIGN_MANIFEST,
    MANIFEST_NAME,
    After,
    Kill,
    KillKind,
    LongOutage,
    Malformed,
    Plan,
    PostAction,
    RunPlan,
    Target,
    Window,
)

WRITERS = 8
HIGH_WATER = 150  # undelivered notifications allowed before the next wave starts
ANNOUNCE_WAIT = 120.0  # seconds a change "after the announcement" waits for it (a loaded machine)
RECORD_NAME = "_tally/announcement.json"
FAULT_STEPS = tuple(Step)  # every crash point the handler has


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
    # real faults: what was carried out (the plan says what was meant)
    pre_deletes: int = 0
    post_done: dict[str, int] = field(default_factory=dict)  # kind -> carried out
    post_after_announcement: int = 0  # carried out once the run's announcement was seen
    post_skipped: list[str] = field(default_factory=list)  # why a planned change did not happen
    foreign_manifests: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    long_outages: list[dict[str, Any]] = field(default_factory=list)
    late_registrations: list[dict[str, Any]] = field(default_factory=list)
    last_change: float = 0.0  # time.time() of the storm's last change to an output

    @property
    def published(self) -> int:
        return self.notifications + self.duplicates + len(self.malformed_ids)


class Recorder:
    """The bridge's suppress hook, wrapped: records every message the bridge takes (id ->
    attributes) before the gate decides; Storage's own notifications are recorded the same way."""

    def __init__(self, gate: Callable[[Any], bool] | None = None) -> None:
        self.gate = gate
        self.seen: dict[str, dict[str, str]] = {}
        self.order: list[str] = []  # ids in the order first seen: readers take what is new
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> bool:
        with self._lock:
            if message.message_id not in self.seen:
                self.seen[message.message_id] = dict(message.attributes)
                self.order.append(message.message_id)
        return self.gate(message) if self.gate is not None else False

    def since(self, start: int) -> list[tuple[str, dict[str, str]]]:
        """The messages first seen after the first `start` ones, in order."""
        with self._lock:
            return [(i, self.seen[i]) for i in self.order[start:]]


@dataclass
class Ledger:
    """What the chaos run did to the platform: the checker's record of the truth over time."""

    published_ids: set[str] = field(default_factory=set)  # messages the harness published
    mutations: list[tuple[str, int, str]] = field(default_factory=list)  # name, gen, event type
    generations: dict[str, set[int]] = field(default_factory=dict)  # every generation written
    recorder: Recorder = field(default_factory=Recorder)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrote(self, name: str, generation: int) -> None:
        with self.lock:
            self.mutations.append((name, generation, "OBJECT_FINALIZE"))
            self.generations.setdefault(name, set()).add(generation)

    def deleted(self, name: str, generation: int) -> None:
        with self.lock:
            self.mutations.append((name, generation, "OBJECT_DELETE"))

    def published(self, message_id: str) -> None:
        with self.lock:
            self.published_ids.add(message_id)


def handler_instances(stack: Any) -> list[tuple[str, int, int]]:
    """(name, pid, requests in flight) of every serving handler instance."""
    instances = getattr(stack, "handler_instances", None)
    if instances is not None:
        return [(f"handler-{i.slot}", i.pid, i.in_flight) for i in instances.instances()]
    proc = getattr(stack, "_processes", {}).get("handler")  # one process, before instances
    if proc is None or proc.proc is None:
        return []
    return [("handler", proc.proc.pid, -1)]


def kill_instances(stack: Any, victims: list[tuple[str, int, int]]) -> list[int]:
    """SIGKILL each victim's process group (the server and its worker): no clean-up runs."""
    killed = []
    for _name, pid, _in_flight in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    if getattr(stack, "handler_instances", None) is None and killed:
        # No supervisor on this platform: bring the handler back as an operator would.
        threading.Thread(
            target=stack.restart_handler, args=(stack.handler_env,), daemon=True
        ).start()
    return killed


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
        self._threads: list[threading.Thread] = []
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

    def hold(
        self,
        outage: LongOutage,
        over: Callable[[], bool],
        least: float,
        note: Callable[[], dict[str, Any]],
    ) -> None:
        """Open a long outage now, in a thread; close it once `over()` holds and it lasted
        `least` seconds (the push retry span), or after the outage's cap."""

        def run() -> None:
            started, t0 = time.time(), time.monotonic()
            self._switch(outage.target, +1)
            try:
                while time.monotonic() - t0 < outage.cap:
                    if time.monotonic() - t0 >= least and over():
                        break
                    time.sleep(0.05)
            finally:
                self._switch(outage.target, -1)
            seconds = time.monotonic() - t0
            with self._lock:
                self._stats.windows.append((f"{outage.target}-long", started, seconds))
                self._stats.long_outages.append(
                    {"target": str(outage.target), "wave": outage.wave, "seconds": seconds} | note()
                )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def finish(self) -> None:
        for timer in self._timers:
            timer.join()
        for thread in self._threads:
            thread.join()
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
    def __init__(
        self, stack: Any, plan: Plan, baseline: Baseline, deadline: float, ledger: Ledger
    ) -> None:
        self.stack = stack
        self.plan = plan
        self.baseline = baseline
        self.deadline = deadline
        self.ledger = ledger
        self.stats = StormStats()
        self.bucket = stack.storage_client().bucket(stack.outputs_bucket)
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}
        self._props: dict[str, dict[str, Any]] = {}
        self._deferred: list[tuple[bytes, dict[str, str]]] = []
        self._rng = random.Random(plan.seed ^ 0x5EED)
        self._writers = Writers(WRITERS, self._error)
        self._outages = Outages(stack, self.stats)
        # follow-ups: changes after completion, waiting for their moment (and the announcement)
        self._follow: list[tuple[float, float, RunPlan, PostAction, int]] = []
        self._follow_busy = 0
        self._announced: set[str] = set()  # run prefixes with a completion message
        self._completions_seen = 0
        self._classified = 0  # recorder.order entries sorted into _relevant_ids
        self._relevant_ids: set[str] = set()
        self._kills_due = sorted(
            (k for k in plan.kills if k.kind is KillKind.AFTER_PUBLISH), key=lambda k: k.nth
        )
        self._checks: list[tuple[float, dict[str, Any]]] = []  # kill -> read its run's record
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow_loop, name="follower", daemon=True)

    def _error(self, exc: Exception) -> None:
        with self._lock:
            self.stats.write_errors.append(f"{type(exc).__name__}: {exc}")

    # -- publishing ----------------------------------------------------------------------------
    def _publish(self, data: bytes, attributes: dict[str, str]) -> str:
        message_id = self.stack.publish_object_event(data, attributes)
        self.ledger.published(message_id)
        return message_id

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
    def _upload(
        self, name: str, content: bytes, if_generation_match: int | None = None
    ) -> dict[str, Any]:
        for attempt in range(4):
            blob = self.bucket.blob(name)
            try:
                blob.upload_from_string(
                    content,
                    content_type="application/octet-stream",
                    if_generation_match=if_generation_match,
                )
                props = dict(blob._properties)
                self.ledger.wrote(name, int(props["generation"]))
                if not name.endswith("/" + MANIFEST_NAME):
                    with self._lock:
                        before = self._props.get(name)
                        self._props[name] = props
                        self.stats.last_change = time.time()
                    if before is not None:  # Storage also says the old generation was deleted
                        self.ledger.deleted(name, int(before["generation"]))
                return props
            except Exception as exc:
                if (if_generation_match is not None and "412" in str(exc)) or attempt == 3:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _delete(self, name: str) -> int | None:
        """Delete the current generation; returns it (None: there was nothing)."""
        with self._lock:
            props = self._props.pop(name, None)
        if props is None:
            return None
        generation = int(props["generation"])
        self.bucket.blob(name).delete(if_generation_match=generation)
        self.ledger.deleted(name, generation)
        with self._lock:
            self.stats.notifications += 1
            self.stats.last_change = time.time()
        return generation

    def _write(self, run: RunPlan, path: str) -> None:
        name = run.prefix() + path
        if path == MANIFEST_NAME:  # the workflow's own output.json: tally must leave it alone
            self._upload(name, FOREIGN_MANIFEST)
            with self._lock:
                self.stats.foreign_manifests += 1
            self._done(run)
            return
        content = (run.marker_text if path == "_FAILED" else f"{name} #1").encode()
        props = self._upload(name, content)
        with self._lock:
            self.stats.objects += 1
            self.stats.notifications += 1
        self._duplicate(run, path, finalize_message(props, None))
        if path == run.closer:
            self._closed(run)
        elif path in run.overwrites:
            self._writers.put(lambda: self._overwrite(run, path))
        elif path in run.pre_deletes:
            self._writers.put(lambda: self._delete_then_write(run, path))
        else:
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

    def _delete_then_write(self, run: RunPlan, path: str) -> None:
        """Before completion: the workflow deletes an output and writes it again."""
        name = run.prefix() + path
        self._delete(name)
        self._upload(name, f"{name} #again".encode())
        with self._lock:
            self.stats.pre_deletes += 1
            self.stats.notifications += 1
        self._done(run)

    def _done(self, run: RunPlan) -> None:
        with self._lock:
            self._pending[run.index] -= 1
            ready = self._pending[run.index] == 0
        if ready and run.closer is not None:
            self._writers.put(lambda: self._write(run, run.closer or ""))

    # -- after completion ----------------------------------------------------------------------
    def _closed(self, run: RunPlan) -> None:
        now = time.monotonic()
        with self._lock:
            for action in run.post:
                self._follow.append((now + action.delay, now + ANNOUNCE_WAIT, run, action, 0))

    def _follow_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch_completions()
                self._release_follow_ups()
                self._check_kills()
            except Exception as exc:  # recorded; the storm goes on
                self._error(exc)
            time.sleep(0.02)

    def _watch_completions(self) -> None:
        completions = self.stack.completions.snapshot()
        fresh = completions[self._completions_seen :]
        self._completions_seen = len(completions)
        root = self.plan.root
        for c in fresh:
            a = c.attributes
            if not a.get("workflow", "").startswith(root):
                continue
            prefix = f"{a.get('workflow')}/{a.get('version')}/{a.get('run_id')}/"
            with self._lock:
                self._announced.add(prefix)
                count = len(self._announced)
            while self._kills_due and self._kills_due[0].nth <= count:
                self._kill(self._kills_due.pop(0), prefix)

    def _release_follow_ups(self) -> None:
        now = time.monotonic()
        ready, waiting = [], []
        with self._lock:
            for item in self._follow:
                at, give_up, run, action, _tries = item
                announced = run.prefix() in self._announced
                if now >= at and (not action.wait_announced or announced or now >= give_up):
                    ready.append(item)
                else:
                    waiting.append(item)
            self._follow = waiting
            self._follow_busy += len(ready)
        for item in ready:
            self._writers.put(lambda i=item: self._after(*i))

    def _after(
        self, at: float, give_up: float, run: RunPlan, action: PostAction, tries: int
    ) -> None:
        try:
            with self._lock:
                announced = run.prefix() in self._announced
            if action.wait_announced and not announced:
                self._skip(run, action, "its announcement was not seen in time")
                return
            if not self._carry_out(run, action, tries):
                if tries < 20:  # the manifest is not there yet: again a little later
                    now = time.monotonic()
                    with self._lock:
                        self._follow.append((now + 0.5, give_up, run, action, tries + 1))
                else:
                    self._skip(run, action, "output.json never appeared")
                return
            with self._lock:
                self.stats.post_done[str(action.kind)] = (
                    self.stats.post_done.get(str(action.kind), 0) + 1
                )
                self.stats.post_after_announcement += announced
        finally:
            with self._lock:
                self._follow_busy -= 1

    def _skip(self, run: RunPlan, action: PostAction, why: str) -> None:
        with self._lock:
            self.stats.post_skipped.append(f"{run.prefix()} {action.kind}: {why}")

    def _carry_out(self, run: RunPlan, action: PostAction, tries: int) -> bool:
        name = run.prefix() + action.path
        kind = action.kind
        if kind.on_manifest:
            blob = self.bucket.get_blob(name)
            if blob is None:
                return False
            data = blob.download_as_bytes()
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {}
            if doc.get("kind") != "tally#manifest":
                return False
            if kind is After.DELETE_MANIFEST:
                blob.delete(if_generation_match=blob.generation)
                self.ledger.deleted(name, int(blob.generation))
            else:  # a user "fixes" the manifest: drops an output and adds a note
                doc["outputs"] = doc.get("outputs", [])[1:]
                doc["edited_by"] = "a user"
                self._upload(name, json.dumps(doc).encode(), if_generation_match=blob.generation)
            return True
        if kind in (After.REWRITE, After.LATE_OPTIONAL, After.LATE_UNEXPECTED):
            old = self._props.get(name)
            self._upload(name, f"{name} #{kind}".encode())
            with self._lock:
                self.stats.notifications += 2 if old else 1
            return True
        if kind is After.DELETE_OPTIONAL:
            self._delete(name)
            return True
        if kind is After.DELETE_REWRITE:
            self._delete(name)
            time.sleep(action.gap)
            self._upload(name, f"{name} #rerun".encode())
            with self._lock:
                self.stats.notifications += 1
            return True
        raise AssertionError(kind)

    # -- SIGKILLs ------------------------------------------------------------------------------
    def _kill(self, kill: Kill, prefix: str | None = None) -> None:
        instances = handler_instances(self.stack)
        if kill.kind is KillKind.AFTER_PUBLISH:
            victims = [i for i in instances if i[2] != 0] or instances
        else:
            victims = [instances[kill.slot % len(instances)]] if instances else []
        killed = kill_instances(self.stack, victims)
        note: dict[str, Any] = {
            "kind": str(kill.kind),
            "at": time.time(),
            "pids": killed,
            "instances": [name for name, _pid, _n in victims],
            "in_flight": sum(max(0, n) for _name, _pid, n in victims),
        }
        if prefix is not None:
            note["run"] = prefix
            with self._lock:
                self._checks.append((time.monotonic() + 0.5, note))
        with self._lock:
            self.stats.kills.append(note)

    def _check_kills(self) -> None:
        """Half a second after a kill at a completion: was the run's record left claimed (the
        kill landed between publish and mark)?"""
        now = time.monotonic()
        with self._lock:
            due = [c for c in self._checks if c[0] <= now]
            self._checks = [c for c in self._checks if c[0] > now]
        for _at, note in due:
            blob = self.bucket.get_blob(note["run"] + RECORD_NAME)
            claim_status = (
                json.loads(blob.download_as_bytes()).get("claim_status") if blob else None
            )
            note["record_after_kill"] = claim_status

    def _schedule_kills(self, wave: int) -> None:
        for kill in self.plan.kills:
            if kill.kind is KillKind.AT_RANDOM and kill.wave == wave:
                timer = threading.Timer(kill.delay, self._kill, (kill,))
                timer.daemon = True
                timer.start()

    # -- long outages --------------------------------------------------------------------------
    def retry_span(self) -> float:
        """Seconds between a message's first and last push attempt (backoffs only)."""
        bridge = self.stack.bridge
        return sum(bridge.backoff(a) for a in range(1, bridge.max_attempts))

    def _dead(self) -> int:
        return len(self.stack.bridge.stats.dead_lettered)

    def _long_bigquery(self, outage: LongOutage) -> None:
        before = self._dead()
        self._outages.hold(
            outage,
            lambda: self._dead() > before,
            self.retry_span() + 1.0,
            lambda: {"dead_lettered_meanwhile": self._dead() - before},
        )

    def _long_registry(self, outage: LongOutage) -> None:
        """Every instance killed first (the spare takes over: every spec cache is cold, as after
        a deployment), so that every delivery needs the registry while it is down."""
        victims = handler_instances(self.stack)
        killed = kill_instances(self.stack, victims)
        with self._lock:
            self.stats.kills.append(
                {
                    "kind": "with-registry-outage",
                    "at": time.time(),
                    "pids": killed,
                    "instances": [name for name, _pid, _n in victims],
                    "in_flight": sum(max(0, n) for _name, _pid, n in victims),
                }
            )
        before = self._dead()
        self._outages.hold(
            outage,
            lambda: self._dead() > before,
            self.retry_span() + 1.0,
            lambda: {"dead_lettered_meanwhile": self._dead() - before},
        )

    # -- waves ---------------------------------------------------------------------------------
    def _relevant(self, attributes: dict[str, str]) -> bool:
        """A notification of one of the storm's outputs (not tally's files, not manifests); the
        backlog also counts every message the storm published itself."""
        name = attributes.get("objectId", "")
        return (
            name.startswith(self.plan.root)
            and "/_tally/" not in name
            and not name.endswith("/" + MANIFEST_NAME)
        )

    def backlog(self) -> int:
        """Notifications published and not yet finished (acknowledged, dead-lettered or
        suppressed), at most. Incremental: polled every 0.1 s over tens of thousands of
        messages, a full pass each time made the driver itself the bottleneck of `make chaos`."""
        s = self.stack.bridge.stats
        fresh = self.ledger.recorder.since(self._classified)
        self._classified += len(fresh)
        self._relevant_ids.update(i for i, attributes in fresh if self._relevant(attributes))
        done = s.acked | s.dead_lettered | s.suppressed
        finished = len(done & (self._relevant_ids | self.ledger.published_ids))
        return self.stats.published - finished

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
        self._schedule_kills(wave)
        for outage in self.plan.long_outages:
            if outage.wave == wave:
                (self._long_bigquery if outage.target is Target.BIGQUERY else self._long_registry)(
                    outage
                )
        for task in tasks:
            self._writers.put(task)
        self._writers.join()
        for version in self.plan.late_versions(wave):
            # Its runs' outputs have landed (deliveries: unknown-workflow); now it is registered.
            resp = self.stack.register(version.spec())
            self.stats.late_registrations.append(
                {
                    "version": f"{version.workflow}/{version.version}",
                    "status": resp.status_code,
                    "reconcile": resp.headers.get("Tally-Reconcile"),
                }
            )

    def _registry_triggers(self) -> dict[str, float]:
        """Object name -> window duration: a registry window opens when the bridge starts
        delivering the first notification of the first run of a version introduced in a wave
        with a registry window (that delivery needs the spec unless the registration's own
        reconcile request made an instance fetch it)."""
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

    def _follow_ups_left(self) -> bool:
        with self._lock:
            return bool(self._follow) or self._follow_busy > 0

    def run(self, progress: Callable[[str], None]) -> StormStats:
        started = time.monotonic()
        self.ledger.recorder.gate = self._gate()
        self.stack.bridge.suppress = self.ledger.recorder
        self._follower.start()
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
            while self._follow_ups_left() and time.monotonic() < self.deadline:
                time.sleep(0.05)
            self._writers.join()
            self._wait_backlog(0, stall_seconds=10.0)
            self.stats.drained = wait_idle(self.stack, self.deadline)
            self._check_kills_now()
        finally:
            self._stop.set()
            self._writers.stop()
            self._outages.finish()
            self.ledger.recorder.gate = None  # keep recording, stop suppressing
        self.stats.seconds = time.monotonic() - started
        return self.stats

    def _check_kills_now(self) -> None:
        with self._lock:
            self._checks = [(0.0, note) for _at, note in self._checks]
        self._check_kills()


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
