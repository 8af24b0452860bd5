"""The chaos and fuzz suite (issue 9): proof that "nothing lost, nothing twice" holds at scale.

`python -m tests.chaos --runs 1000` (`make chaos`) starts its own local platform, runs the seeded
chaos run (tests/chaos/chaos.py), fuzzes the event handler and the registry, runs the security
checks and writes docs/reliability.md. tests/integration/test_chaos_small.py runs 50 runs on the
pytest session's platform.

Besides the handler's own injected crashes (`TALLY_FAULTS`), the run carries out real faults
(issue 13, tests/chaos/plan.py): SIGKILLs of handler instances, outputs changed before and after
completion, deleted, edited and foreign manifests, outages longer than the push retry span and
late registrations. The checker (tests/chaos/checker.py) re-derives the truth without the
handler's code: one content per key, revisions only for changes, manifests true to the bucket's
current generations, no run ANNOUNCING, CHANGED or BLOCKED after the repair, no message lost.
"""

from tests.chaos.chaos import ChaosConfig, ChaosResult, run_chaos

__all__ = ["ChaosConfig", "ChaosResult", "run_chaos"]
