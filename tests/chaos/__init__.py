"""The chaos and fuzz suite (issue 9): proof that "nothing lost, nothing twice" holds at scale.

`python -m tests.chaos --runs 1000` (`make chaos`) starts its own local platform, runs the seeded
chaos run (tests/chaos/chaos.py), fuzzes the event handler and the registry, runs the security
checks and writes docs/reliability.md. tests/integration/test_chaos_small.py runs 50 runs on the
pytest session's platform.
"""

from tests.chaos.chaos import ChaosConfig, ChaosResult, run_chaos

__all__ = ["ChaosConfig", "ChaosResult", "run_chaos"]
