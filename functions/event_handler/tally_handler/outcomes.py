"""The outcome vocabulary (docs/design.md, "Outcomes"): one name per thing the handler did.

The same strings appear in code, structured logs, BigQuery (``events.outcome``) and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from tally_handler.layout import Run, RunOutput

__all__ = ["HANDLING", "Handled", "Handling", "Outcome", "RunState"]


class Outcome(StrEnum):
    RECORDED = "recorded"
    COMPLETED = "completed"
    FAILED = "failed"
    RECONCILED = "reconciled"
    AFTER_COMPLETION = "after-completion"
    UNEXPECTED = "unexpected"
    IGNORED = "ignored"
    UNKNOWN_WORKFLOW = "unknown-workflow"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    STALLED = "stalled"
    CHANGED = "changed"
    REVISED = "revised"
    BLOCKED = "blocked"
    RESTORED = "restored"

    @property
    def acknowledged(self) -> bool:
        """Whether the delivery is acknowledged (HTTP 200); otherwise Pub/Sub redelivers it."""
        return HANDLING[self].acknowledged

    @property
    def http_status(self) -> int:
        return HANDLING[self].http_status

    @property
    def severity(self) -> str:
        """Cloud Logging severity of the delivery's structured log line."""
        return HANDLING[self].severity


# Shaped like completeness.PatternCount (two fields and a derived property), unrelated.
@dataclass(frozen=True, slots=True)
class Handling:
    acknowledged: bool
    severity: str

    @property
    def http_status(self) -> int:
        # 503 (not 500): Pub/Sub retries it with backoff, and it reads as "try again later".
        return 200 if self.acknowledged else 503


_ACK_INFO = Handling(acknowledged=True, severity="INFO")
_ACK_NOTICE = Handling(acknowledged=True, severity="NOTICE")
_ACK_WARNING = Handling(acknowledged=True, severity="WARNING")

HANDLING: MappingProxyType[Outcome, Handling] = MappingProxyType(
    {
        Outcome.RECORDED: _ACK_INFO,
        Outcome.COMPLETED: _ACK_NOTICE,
        Outcome.FAILED: _ACK_NOTICE,
        Outcome.RECONCILED: _ACK_NOTICE,
        Outcome.AFTER_COMPLETION: _ACK_INFO,
        Outcome.UNEXPECTED: _ACK_INFO,
        Outcome.IGNORED: _ACK_INFO,
        Outcome.UNKNOWN_WORKFLOW: _ACK_INFO,
        # Malformed input is acknowledged: redelivering it cannot make it well-formed.
        Outcome.REJECTED: _ACK_WARNING,
        Outcome.DEFERRED: Handling(acknowledged=False, severity="WARNING"),
        Outcome.STALLED: _ACK_WARNING,
        # An announced run's outputs changed: a revision follows once it is complete and quiet.
        Outcome.CHANGED: _ACK_WARNING,
        Outcome.REVISED: _ACK_NOTICE,
        # Permanent until someone moves the object away: acknowledged, never retried forever.
        Outcome.BLOCKED: Handling(acknowledged=True, severity="ERROR"),
        Outcome.RESTORED: _ACK_WARNING,
    }
)


class RunState(StrEnum):
    """A run's state as a delivery saw it (``events.run_state``, the run_status view, `tally`)."""

    RUNNING = "RUNNING"  # outputs are arriving; not announced
    ANNOUNCING = "ANNOUNCING"  # claimed, not yet marked published
    COMPLETE = "COMPLETE"  # announced complete, and the bucket still matches
    FAILED = "FAILED"  # announced failed
    CHANGED = "CHANGED"  # announced, then changed; not yet re-announced as a new revision
    BLOCKED = "BLOCKED"  # a foreign object sits where the manifest belongs
    STALLED = "STALLED"  # not announced and past the spec's deadline


@dataclass(slots=True)
class Handled:
    """What the handler did with one delivery (or reconciliation with one run): one event row."""

    outcome: Outcome
    detail: str
    run_output: RunOutput | None = None
    run: Run | None = None
    revision: int | None = None  # the run's revision this delivery saw or announced
    run_state: RunState | None = None
    severity: str | None = None  # overrides the outcome's (a change that left a run incomplete)
    completion_seconds: float | None = None  # an announcement: its claim - the first output

    @property
    def log_severity(self) -> str:
        return self.severity or self.outcome.severity
