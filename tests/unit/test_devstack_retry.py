"""The local push bridge retries as the subscription Terraform creates does, scaled in time."""

from __future__ import annotations

import re

import pytest

from devstack import Stack
from devstack.bridge import TIME_FACTOR, PushBridge, RetryPolicy
from tests.conftest import ROOT


def terraform_default(field: str) -> float:
    """A default of terraform/variables.tf's event_subscription object."""
    text = (ROOT / "terraform" / "variables.tf").read_text()
    block = text[text.index('variable "event_subscription"') :]
    match = re.search(rf"{field}\s*=\s*optional\(number,\s*([0-9.]+)\)", block)
    assert match, f"{field} has no default in terraform/variables.tf"
    return float(match.group(1))


def test_the_policy_is_terraforms():
    policy = RetryPolicy()
    assert policy.min_backoff == terraform_default("minimum_backoff_seconds")
    assert policy.max_backoff == terraform_default("maximum_backoff_seconds")
    assert policy.max_attempts == terraform_default("max_delivery_attempts")


def test_the_platform_scales_durations_not_attempts():
    stack = Stack(environ={}, export_env=False)
    assert stack.time_factor == TIME_FACTOR == 0.01
    assert (stack.min_backoff, stack.max_backoff) == pytest.approx((0.1, 6.0))
    assert stack.max_attempts == RetryPolicy().max_attempts
    assert stack.instance_count == 2
    assert "2 handler instances" in stack.describe() and "x 0.01" in stack.describe()


def test_production_timing_and_instances_from_the_environment():
    environ = {"TALLY_DEVSTACK_TIME_FACTOR": "1", "TALLY_DEVSTACK_INSTANCES": "3"}
    stack = Stack(environ=environ, export_env=False)
    assert (stack.min_backoff, stack.max_backoff, stack.max_attempts) == (10.0, 600.0, 5)
    assert stack.instance_count == 3


def test_backoff_doubles_from_the_minimum_up_to_the_maximum():
    policy = RetryPolicy().scaled(0.01)
    bridge = PushBridge(
        None,
        None,
        "s",
        "http://x",
        "t",
        policy.max_attempts,
        policy.min_backoff,
        policy.max_backoff,
    )
    waits = [bridge.backoff(n) for n in range(1, 10)]
    assert waits[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert max(waits) == pytest.approx(6.0)
