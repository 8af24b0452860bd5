"""Child processes of the local platform: started in their own process group, logged to a file,
health-checked with a deadline, and always stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import ctypes
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


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the platform's process dies without cleaning up, its children follow.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, stdout_pipe: bool = False) -> None:
        if not Path(self.argv[0]).exists() and "/" in self.argv[0]:
            raise StackError(
                f"{self.name}: {self.argv[0]} does not exist; run `make install` to build it"
            )
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (started from the main thread)
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
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
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
