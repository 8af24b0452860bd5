"""The chaos run at small scale, inside `make test`: 50 runs on the session's platform with every
fault of `make chaos` (tests/chaos/), then reconciliation and the checker. The platform is left as
it was found: handler restarted without faults, taps up, bridge settings back.

TALLY_CHAOS_RUNS and TALLY_CHAOS_SEED change the size and the seed.
"""

from __future__ import annotations

import os

import pytest

from tests.chaos import ChaosConfig, run_chaos
from tests.chaos.report import console_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = int(os.environ.get("TALLY_CHAOS_RUNS", "50"))
SEED = int(os.environ.get("TALLY_CHAOS_SEED", "20261125"))


def test_fifty_runs_under_chaos_are_each_announced_once(stack):
    print(f"\nseed {SEED}")
    result = run_chaos(stack, ChaosConfig(runs=RUNS, seed=SEED, concurrency=16), say=print)
    report = "\n".join(console_lines(result))
    print(report)
    assert result.storm.drained, f"the deliveries never drained (seed {SEED})\n{report}"
    assert not result.storm.write_errors, result.storm.write_errors
    injected = result.injections
    assert sum(injected["crashes_by_step"].values()) > 0, (
        "no crash injected: the run proves nothing"
    )
    assert injected["duplicate_publishes"] > 0 and injected["suppressed_messages"] > 0
    assert injected["registry_503"] > 0, injected
    assert injected["bigquery_503"] > 0, injected
    assert result.ok, f"must-be-zero figures are not 0 (seed {SEED})\n{report}"
    assert not stack.registry_tap.down and not stack.bigquery_tap.down
    assert stack.bridge.suppress is None
