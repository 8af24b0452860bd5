"""Child processes of the local platform: started in their own process group, logged to a file,
health-checked with a deadline, and always stopped (SIGTERM, then SIGKILL).

No Python runs between fork and exec (no `preexec_fn`): with one, subprocess calls fork() instead
of vfork(), so gRPC's fork handlers run in the child and restart its poller thread there, which
killed about 1 in 50 children with SIGABRT ("epoll_wait error: Bad file descriptor") whenever the
parent had live gRPC clients. `setpriv --pdeathsig` (util-linux) sets the parent-death signal in
the child instead, then execs the program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Every child carries this variable, so a leftover process can be found by scanning /proc.
STACK_ID_VAR = "TALLY_DEVSTACK_ID"


class StackError(RuntimeError):
    """A component of the local platform could not start; the message names it and its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# If the platform's process dies without cleaning up, its children follow (PR_SET_PDEATHSIG; it
# fires when the *thread* that started the child ends, so long-lived threads start children).
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "TERM", "--")


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str],
        cwd: Path | None = None,
        log_name: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        # Several processes may share one log (a function's instances, as Cloud Logging shows them).
        self.log_path = log_dir / f"{log_name or name}.log"
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self, stdout_pipe: bool = False) -> None:
        if not Path(self.argv[0]).exists() and "/" in self.argv[0]:
            raise StackError(
                f"{self.name}: {self.argv[0]} does not exist; run `make install` to build it"
            )
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [*DIE_WITH_PARENT, *self.argv],
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"{self.name} could not start ({exc}); see {self.log_path}") from exc
        finally:
            log.close()

    def read_first_line(self, timeout: float) -> str:
        """The first stdout line (pstest prints its address there)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.05):
                line = self.proc.stdout.readline().decode().strip()
                if line:
                    return line
            self.check_alive()
        raise self.failure(f"printed no address within {timeout:.0f} s")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.failure(f"exited with code {self.proc.returncode}")

    def failure(self, what: str) -> StackError:
        tail = ""
        if self.log_path.exists():
            lines = self.log_path.read_text(errors="replace").splitlines()[-8:]
            tail = "\n    " + "\n    ".join(lines) if lines else ""
        return StackError(f"{self.name} {what}; read {self.log_path}{tail}")

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise self.failure(f"was not ready within {timeout:.0f} s")

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self._stopped:
            return
        self._stopped = True  # once: long after, the group id could belong to another process
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        # A leader that died (or was killed alone) may leave members of its group behind, such as
        # gunicorn's worker. The group id stays reserved while a member lives, so this reaches
        # only what this process started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def processes_with_stack_id(stack_id: str) -> list[int]:
    """PIDs of live processes started by the platform with this id (to prove nothing is left)."""
    needle = f"{STACK_ID_VAR}={stack_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().split(")")[-1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def tcp_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0
