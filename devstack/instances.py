"""The event handler's instances, served as Cloud Run serves a function.

K instances of one revision, each its own process with its own memory (so its own caches), run
side by side. Each request goes to the ready instance with the fewest requests in flight (ties in
turn). A supervisor thread replaces an instance that dies, as Cloud Run does, and logs each
replacement as a JSON line (`supervisor.log`). It keeps one more instance started and idle, as
Cloud Run keeps idle instances warm: a dead instance's place is taken by it at once (a cold start
takes 1 to 3 s here, more under load), and a new idle instance starts behind it.

A new revision (other environment) is rolled out the way a deployment shifts traffic: the new
instances start, traffic moves to them once they answer, and the old ones are stopped after their
requests finish. A request that finds no ready instance waits for one (Cloud Run holds it during a
cold start) up to `pending_timeout`, then gets 503; one whose instance dies while it is being
served gets 503, which a push subscription retries.

The supervisor thread starts every instance: the parent-death signal of the children
(devstack.processes) is tied to the thread that starts them, and this thread lives as long as
they do.
"""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.processes import ManagedProcess, StackError, free_port
from devstack.tap import ProxyHandler

# (name, port, environment) -> a ManagedProcess not yet started
Spawn = Callable[[str, int, dict[str, str]], ManagedProcess]
Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass(eq=False)
class Instance:
    slot: int
    revision: int
    port: int
    process: ManagedProcess
    ready: bool = False
    in_flight: int = 0
    served: int = 0  # requests routed to it
    retiring: bool = False

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def exit_status(self) -> str | None:
        """None while running; else how it ended ("exit 1", "SIGKILL")."""
        code = self.process.proc.poll() if self.process.proc is not None else 0
        if code is None:
            return None
        return f"exit {code}" if code >= 0 else signal.Signals(-code).name


@dataclass
class _Slot:
    serving: Instance | None = None
    pending: Instance | None = None  # starting: a replacement, or the next revision
    died_at: float | None = None  # when the serving instance was found dead (heal timing)
    died: dict[str, Any] = field(default_factory=dict)
    failures: int = 0  # consecutive instances that died before they were ready
    retry_at: float = 0.0


def _probe(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class HandlerInstances:
    def __init__(
        self,
        count: int,
        spawn: Spawn,
        env: dict[str, str],
        log_path: Path,
        say: Callable[[str], None] | None = None,
        interval: float = 0.02,
        pending_timeout: float = 30.0,
        request_timeout: float = 60.0,
    ) -> None:
        if count < 1:
            raise ValueError("at least one handler instance")
        self.count = count
        self._spawn = spawn
        self._env = dict(env)
        self._revision = 1
        self._log_path = log_path
        self._say = say
        self._interval = interval
        self.pending_timeout = pending_timeout
        self.request_timeout = request_timeout
        # count routed slots, then the idle (standby) instance's
        self._slots = [_Slot() for _ in range(count + 1)]
        self._started = itertools.count()
        self._retiring: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self.events: list[dict[str, Any]] = []  # every line the supervisor logged

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the supervisor, which starts the instances; `wait_ready` waits for them."""
        self._thread.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_revision(self._revision, timeout)

    def restart(self, env: dict[str, str], timeout: float | None = None) -> None:
        """Roll out a revision with this environment; returns once only it serves. As on Cloud
        Run, the old revision's requests may run to the request timeout first (a reconcile page
        can take that long on a loaded machine): by default wait for that plus a minute to start."""
        with self._lock:
            self._env = dict(env)
            self._revision += 1
            revision = self._revision
        self.wait_revision(revision, self.request_timeout + 60.0 if timeout is None else timeout)

    def wait_revision(self, revision: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                serving = [s.serving for s in self._slots]
                rolled = all(i is not None and i.revision >= revision and i.ready for i in serving)
                retiring = [t for t in self._retiring if t.is_alive()]
            if rolled and not retiring:
                return
            if not self._thread.is_alive():
                raise StackError("handler: the supervisor is not running")
            time.sleep(0.02)
        raise self._failure(f"revision {revision} was not ready within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            instances = [i for s in self._slots for i in (s.serving, s.pending) if i is not None]
            retiring = list(self._retiring)
        for thread in retiring:
            thread.join(10)
        for instance in instances:
            instance.process.stop()

    # -- what tests and tools see ----------------------------------------------------------
    def instances(self) -> list[Instance]:
        """The instances requests are routed to, by slot (one being replaced is missing)."""
        with self._lock:
            return [s.serving for s in self._slots[: self.count] if s.serving is not None]

    def standby(self) -> Instance | None:
        with self._lock:
            return self._slots[self.count].serving

    def processes(self) -> dict[str, ManagedProcess]:
        found = {f"handler-{i.slot}": i.process for i in self.instances()}
        spare = self.standby()
        if spare is not None:
            found["handler-standby"] = spare.process
        return found

    def healthy(self) -> bool:
        """Every slot, the standby's too, has a live, ready instance of the current revision."""
        with self._lock:
            revision = self._revision
            serving = [s.serving for s in self._slots]
        return all(
            i is not None and i.ready and i.revision == revision and i.exit_status() is None
            for i in serving
        )

    def _failure(self, what: str) -> StackError:
        """Names the log (shared by the instances) and quotes its end."""
        with self._lock:
            processes = [i.process for s in self._slots for i in (s.serving, s.pending) if i]
        if processes:
            return processes[0].failure(what)
        return StackError(f"handler {what}; read {self._log_path.parent}")

    # -- routing ---------------------------------------------------------------------------
    def _acquire(self, tried: set[int]) -> Instance | None:
        with self._lock:
            candidates = [
                s.serving
                for s in self._slots[: self.count]
                if s.serving is not None
                and s.serving.ready
                and not s.serving.retiring
                and id(s.serving) not in tried
            ]
            if not candidates:
                return None
            least = min(i.in_flight for i in candidates)
            fewest = [i for i in candidates if i.in_flight == least]
            chosen = fewest[next(self._turn) % len(fewest)]
            chosen.in_flight += 1
            chosen.served += 1
            return chosen

    def _release(self, instance: Instance) -> None:
        with self._lock:
            instance.in_flight -= 1

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Response:
        """Serve one request on one instance, as Cloud Run's front end does."""
        deadline = time.monotonic() + self.pending_timeout
        tried: set[int] = set()
        while True:
            instance = self._acquire(tried)
            if instance is None:
                if time.monotonic() > deadline:
                    return 503, [], b'{"error": "no handler instance became ready"}'
                time.sleep(0.01)
                if tried and self._all_tried(tried):
                    tried.clear()  # every instance refused: wait for the supervisor's new ones
                continue
            conn = http.client.HTTPConnection("127.0.0.1", instance.port, self.request_timeout)
            try:
                try:
                    conn.connect()
                except OSError:
                    # Dead before it got the request (the supervisor has not noticed yet):
                    # nothing was delivered, so another instance takes it.
                    tried.add(id(instance))
                    continue
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    return resp.status, resp.getheaders(), resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    message = f"the handler instance ended during the request ({exc!r})"
                    return 503, [], json.dumps({"error": message}).encode()
            finally:
                conn.close()
                self._release(instance)

    def _all_tried(self, tried: set[int]) -> bool:
        with self._lock:
            routed = self._slots[: self.count]
            return all(s.serving is None or id(s.serving) in tried for s in routed)

    def post(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """The push bridge's transport: POST a push envelope, return the status."""
        del timeout  # each instance connection already has request_timeout
        status, _, _ = self.forward("POST", "/", headers, body)
        return status

    # -- the supervisor --------------------------------------------------------------------
    def _log(self, severity: str, message: str, **fields: Any) -> None:
        line = {
            "severity": severity,
            "component": "supervisor",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "message": message,
            **fields,
        }
        self.events.append(line)
        with self._log_path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        if self._say is not None:
            self._say(f"  supervisor: {message}")

    def _supervise(self) -> None:
        while not self._stop.is_set():
            for index in range(len(self._slots)):
                try:
                    self._tend(index)
                except Exception as exc:  # keep supervising the other slots
                    self._log("ERROR", f"supervising handler instance {index} failed: {exc!r}")
            self._stop.wait(self._interval)

    def _tend(self, index: int) -> None:
        slot = self._slots[index]
        now = time.monotonic()
        with self._lock:
            env, revision = dict(self._env), self._revision
        serving = slot.serving
        if serving is not None and not serving.retiring and serving.exit_status() is not None:
            with self._lock:
                slot.serving = None
            serving.process.stop()  # its group's leftovers (gunicorn's worker)
            role = "the idle instance" if index == self.count else f"handler instance {index}"
            self._log(
                "WARNING",
                f"{role} (pid {serving.pid}) died ({serving.exit_status()})",
                instance=index,
                pid=serving.pid,
                exit=serving.exit_status(),
            )
            if index < self.count:
                slot.died_at = now
                slot.died = {"pid": serving.pid, "exit": serving.exit_status()}
                self._take_standby(index, slot, revision)
        pending = slot.pending
        if pending is not None and pending.exit_status() is not None:
            slot.pending = None
            slot.failures += 1
            slot.retry_at = now + min(5.0, 0.2 * 2**slot.failures)
            self._log(
                "ERROR",
                f"a new handler instance (pid {pending.pid}) ended before it was ready"
                f" ({pending.exit_status()}); see {pending.process.log_path}",
                instance=index,
                pid=pending.pid,
                exit=pending.exit_status(),
            )
            pending.process.stop()
        current = slot.serving
        outdated = current is None or current.revision != revision
        if slot.pending is None and now >= slot.retry_at and outdated:
            slot.pending = self._start_instance(index, revision, env)
        pending = slot.pending
        if pending is not None and _probe(pending.port):
            self._promote(index, slot, pending)

    def _take_standby(self, index: int, slot: _Slot, revision: int) -> None:
        """Route the dead instance's share to the idle instance, when one is ready."""
        spare_slot = self._slots[self.count]
        spare = spare_slot.serving
        if spare is None or not spare.ready or spare.revision != revision:
            return
        if spare.exit_status() is not None:
            return  # its own death is handled when its slot is tended
        with self._lock:
            spare.slot = index
            slot.serving, spare_slot.serving = spare, None
        self._healed(index, slot, spare)

    def _healed(self, index: int, slot: _Slot, new: Instance) -> None:
        if slot.died_at is None:
            return
        healed = time.monotonic() - slot.died_at
        self._log(
            "NOTICE",
            f"handler instance {index} replaced: pid {slot.died['pid']} ({slot.died['exit']})"
            f" -> pid {new.pid}, serving {healed:.2f} s after the death was seen",
            instance=index,
            old_pid=slot.died["pid"],
            exit=slot.died["exit"],
            pid=new.pid,
            heal_seconds=round(healed, 3),
        )
        slot.died_at = None

    def _start_instance(self, index: int, revision: int, env: dict[str, str]) -> Instance:
        port = free_port()
        process = self._spawn(f"handler-{next(self._started)}", port, env)
        process.start()
        return Instance(index, revision, port, process)

    def _promote(self, index: int, slot: _Slot, new: Instance) -> None:
        new.ready = True
        with self._lock:
            old, slot.serving, slot.pending = slot.serving, new, None
        slot.failures = 0
        self._healed(index, slot, new)
        if old is not None:
            old.retiring = True
            thread = threading.Thread(target=self._retire, args=(old,), daemon=True)
            with self._lock:
                self._retiring.append(thread)
            thread.start()

    def _retire(self, old: Instance) -> None:
        """Let its requests finish (up to the request timeout), then stop it."""
        deadline = time.monotonic() + self.request_timeout
        while old.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        old.process.stop()
        with self._lock:
            self._retiring = [t for t in self._retiring if t is not threading.current_thread()]


class Router:
    """The function's one URL (Cloud Run's front end): an HTTP server that forwards each request
    to an instance chosen by `HandlerInstances.forward`."""

    def __init__(self, instances: HandlerInstances, port: int = 0) -> None:
        self._instances = instances
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="router")
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        instances = self._instances

        class Handler(ProxyHandler):
            def _handle(self) -> None:
                body, fwd = self.request_body(), self.forwarded_headers()
                self.relay(*instances.forward(self.command, self.path, fwd, body))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler
