"""The chaos run at small scale, inside `make test`: 50 runs on the session's platform with every
fault of `make chaos` (tests/chaos/): in-code crashes, SIGKILLs of handler instances, outputs
changed before and after completion, deleted and edited manifests, foreign manifests, outages
longer than the push retry span, late registrations; then the repair and the checker. The
platform is left as it was found: handler restarted without faults, taps up, bridge settings back.

Only must-be-zero figures are asserted: which delivery a kill, a crash or an outage meets is
timing (a loaded machine may meet none), so the injections are printed, never asserted.
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
    assert not result.storm.write_errors, f"seed {SEED}: {result.storm.write_errors}"
    assert result.ok, f"must-be-zero figures are not 0 (seed {SEED})\n{report}"
    assert not stack.registry_tap.down and not stack.bigquery_tap.down
    assert stack.bridge.suppress is None
