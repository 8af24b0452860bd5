"""`python -m tests.chaos`: the chaos run at scale, fuzzing and security checks.

Exit status: 0 when every must-be-zero figure is 0 and every fuzz and security check passed (an
audit that cannot reach a vulnerability database is reported, not failed); 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.chaos.report import Extras

ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--runs", type=int, default=1000, help="workflow runs (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="the seed (default: a random one)")
    p.add_argument("--concurrency", type=int, default=16, help="deliveries in flight (16)")
    p.add_argument("--fault-rate", type=float, default=0.05, help="crash probability per step")
    p.add_argument("--lease", type=int, default=5, help="claim lease in seconds (5)")
    p.add_argument("--quiet", type=float, default=1.0, help="revision quiet window in seconds (1)")
    # Short passes here (`make chaos` stays within 20 minutes); `make fuzz` runs the long ones.
    p.add_argument("--fuzz-examples", type=int, default=300, help="handler fuzz requests (300)")
    p.add_argument(
        "--schema-examples", type=int, default=30, help="schemathesis per operation (30)"
    )
    p.add_argument(
        "--duplicates",
        default="80,15,5",
        help="weights of 0, 1 and 2 extra publishes of each notification (80,15,5; the 50-run"
        " chaos of make test: 65,22,13)",
    )
    p.add_argument("--no-fuzz", action="store_true", help="skip both fuzzers")
    p.add_argument("--no-security", action="store_true", help="skip the security checks")
    p.add_argument(
        "--report",
        choices=("auto", "yes", "no"),
        default="auto",
        help="write docs/reliability.md (auto: only for 1,000 runs or more)",
    )
    return p.parse_args(argv)


def duplicate_weights(text: str) -> tuple[int, int, int]:
    try:
        a, b, c = (int(part) for part in text.split(","))
    except ValueError:
        raise SystemExit(f"--duplicates {text!r}: give three whole weights, e.g. 80,15,5") from None
    return a, b, c


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    say(f"seed {seed}")  # first, so that any run can be repeated
    started = time.monotonic()
    static = None
    if not args.no_security:  # checkov and the audits need no platform: beside the run
        from tests.chaos.security import static_checks

        pool = ThreadPoolExecutor(1)
        static = pool.submit(static_checks, ROOT)
        pool.shutdown(wait=False)
    from devstack import Stack
    from tests.chaos.chaos import ChaosConfig, run_chaos
    from tests.chaos.report import Extras, console_lines, write_reports

    command = "python -m tests.chaos " + shlex.join(
        [
            f"--runs={args.runs}",
            f"--seed={seed}",
            f"--concurrency={args.concurrency}",
            f"--duplicates={args.duplicates}",
        ]
    )
    config = ChaosConfig(
        args.runs,
        seed,
        args.concurrency,
        args.fault_rate,
        args.lease,
        quiet_seconds=args.quiet,
        whole_bucket=True,  # its own platform: the repair's every-run pass walks the bucket
        duplicates=duplicate_weights(args.duplicates),
    )
    extras = Extras(command=command)
    state = ROOT / ".devstack" / "chaos"
    with Stack(state_dir=state, concurrency=args.concurrency) as stack:
        say(f"local platform ready in {stack.timings['ready']:.1f} s")
        result = run_chaos(stack, config, say)
        for line in console_lines(result):
            say(line)
        ok = result.ok
        if not args.no_fuzz:
            ok = run_fuzzers(stack, args, seed, extras) and ok
        if not args.no_security:
            assert static is not None
            ok = run_security_checks(stack, extras, static.result()) and ok
    extras.seconds = time.monotonic() - started
    if args.report == "yes" or (args.report == "auto" and args.runs >= 1000):
        for path in write_reports(result, extras, ROOT / "docs"):
            say(f"wrote {path.relative_to(ROOT)}")
    say(f"{'PASSED' if ok else 'FAILED'} in {extras.seconds:.0f} s (seed {seed})")
    return 0 if ok else 1


def run_fuzzers(stack: Any, args: argparse.Namespace, seed: int, extras: Extras) -> bool:
    from tests.chaos.fuzz import run_fuzz
    from tests.chaos.schema_fuzz import run_schemathesis

    say(f"fuzzing the event handler ({args.fuzz_examples} requests)")
    fuzz = run_fuzz(stack, args.fuzz_examples, seed, uuid.uuid4().hex[:6])
    say(
        f"  {fuzz.examples} requests in {fuzz.seconds:.0f} s, statuses {dict(fuzz.statuses)},"
        f" {fuzz.rejected} rejected / {fuzz.rejected_rows} rows, missing {fuzz.missing_ids[:5]}"
        f" {'ok' if fuzz.ok else 'FAILED: ' + '; '.join(fuzz.problems)}"
    )
    say(f"schemathesis on the registry ({args.schema_examples} examples per operation)")
    schema = run_schemathesis(stack, args.schema_examples, seed)
    say(f"  {'ok' if schema.ok else 'FAILED'} in {schema.seconds:.0f} s: {schema.summary}")
    if not schema.ok:
        say(schema.tail)
    extras.fuzz, extras.schema = fuzz, schema
    return fuzz.ok and schema.ok


def run_security_checks(stack: Any, extras: Extras, static: list[Any]) -> bool:
    from tests.chaos.security import run_security

    say("security checks")
    checks = run_security(stack, static=static)
    for check in checks:
        state = "unavailable" if check.unavailable else ("ok" if check.ok else "FAILED")
        say(f"  {state}: {check.name}: {check.summary}")
        for detail in check.details[:10]:
            say(f"    {detail}")
    extras.security = checks
    return all(check.ok for check in checks)


if __name__ == "__main__":
    sys.exit(main())
