"""Fixtures shared by the whole suite. The local platform starts once per test session; tests
isolate themselves by unique names (run ids, workflow names), never by restarting servers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack() -> Iterator[Any]:
    from devstack import Stack

    platform = Stack(state_dir=ROOT / ".devstack" / "pytest", concurrency=8)
    platform.start()
    print(f"\nlocal platform ready in {platform.timings['ready']:.1f} s")
    try:
        yield platform
    finally:
        platform.stop()
        leftovers = platform.leftover_processes()
        assert not leftovers, f"platform processes left running after the session: {leftovers}"


@pytest.fixture
def unique() -> str:
    """A short unique name for this test's runs and workflows."""
    return uuid.uuid4().hex[:10]


def poll(
    check: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Call `check` until it returns something truthy; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError as exc:
            last_error = exc
        time.sleep(interval)
    text = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {text}") from last_error


def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
