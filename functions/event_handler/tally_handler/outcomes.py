"""The outcome vocabulary (docs/design.md, "Outcomes"): one name per thing the handler did.

The same strings appear in code, structured logs, BigQuery (``events.outcome``) and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


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
    }
)
