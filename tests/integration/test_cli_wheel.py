"""The CLI as a user installs it: wheels of `tally` and `tally-handler` in a fresh virtualenv,
run from a directory outside the checkout, against the local platform.

The fresh virtualenv borrows only the third-party packages of the project's own (a path line, not
its .pth files, so the checkout's editable installs stay invisible): it installs in seconds
without the network, and `pip check` still proves the wheels' declared requirements hold.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.integration.platform_helpers import register, spec_with, wait_announced, write_outputs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing of the checkout but the two wheels."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT / "functions" / "event_handler"),
            str(ROOT),
        ],
        check=True,
        cwd=root,
    )
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            *map(str, sorted(wheels.glob("*.whl"))),
        ],
        check=True,
    )
    return env_dir


def run(env_dir: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "PYTHON"))}
    return subprocess.run(
        [str(env_dir / "bin" / "tally"), *args],
        check=False,
        capture_output=True,
        text=True,
        env=clean | env,
        cwd=cwd,
        timeout=120,
    )


def test_the_wheels_declare_what_they_need(installed: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(installed / "bin" / "python"), "check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_installed_cli_uses_its_own_code_and_queries(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import tally_cli, tally_handler, tally_cli.eventlog as e;"
            "print(tally_cli.__file__); print(tally_handler.__file__); print(e.QUERIES_DIR)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    ).stdout.split()
    assert all(str(installed) in path for path in where), where
    listed = run(installed, "query", "--list", env={}, cwd=tmp_path)
    assert listed.returncode == 0 and "stalled_runs" in listed.stdout, listed.stderr


def test_installed_cli_reconciles_and_reports_status(
    installed: Path, tmp_path: Path, stack: Any, unique: str
) -> None:
    """status and reconcile run the handler's code from the installed tally-handler wheel."""
    workflow = f"wheel-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run-1/"
    write_outputs(
        stack,
        prefix,
        ["a.txt", "dir/b.txt", "c.csv", *(f"shards/part-{i}.parquet" for i in range(3))],
    )
    wait_announced(stack, workflow, "1.0.0", "run-1")
    status = run(
        installed,
        "status",
        f"{workflow}/1.0.0/run-1",
        "--require-complete",
        env=stack.client_env,
        cwd=tmp_path,
    )
    assert status.returncode == 0 and "COMPLETE" in status.stdout, status.stdout + status.stderr
    reconciled = run(
        installed,
        "reconcile",
        "--local",
        "--prefix",
        f"{workflow}/",
        "--json",
        env=stack.client_env,
        cwd=tmp_path,
    )
    assert reconciled.returncode == 0, reconciled.stderr
    assert '"announced": []' in reconciled.stdout  # already announced: nothing published again
