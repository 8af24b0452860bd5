"""The event handler's exceptions, in one tree; ``OUTCOME_OF`` maps each to the delivery's outcome.

    TallyError                          outcome (docs/design.md, "Outcomes")
     ├── TransientError                 deferred: 503, Pub/Sub redelivers
     │    ├── RegistryUnavailable       the registry timed out or answered 5xx
     │    └── LogWriteFailed            BigQuery refused or did not take the row
     ├── UnknownWorkflow                unknown-workflow: the registry answered 4xx
     ├── ConfigError (ValueError)       deferred: the deployment's environment is invalid (every
     │                                  request answers 503 until it is fixed)
     ├── PrefixOutsideLayout (ValueError)  rejected: a reconcile request's prefix is outside the
     │                                  layout's root
     ├── UnsatisfiableSpec (ValueError)  blocked: the spec requires a name tally reserves
     ├── NotTallys (ValueError)         blocked: a tally-named object tally did not write
     ├── SpecError (ValueError)         never an outcome: the registry client raises
     │                                  RegistryUnavailable for an unusable answer
     ├── ListingOrderError (ValueError)  never an outcome: a listing out of order is a bug
     └── PreconditionFailed             never an outcome: a generation precondition lost (412);
                                        the protocol acts on it
    delivery.MalformedDelivery          rejected: not a delivery tally handles (defined with the
                                        parser: it carries the salvaged delivery for the event row)
    faults.InjectedFault                test-only: a simulated crash, never caught as a TallyError

Adapters turn their clients' errors into these; the protocol acts on them. Anything else escaping
a delivery is a bug: logged at ERROR and deferred (the last row of ``OUTCOME_OF``), never
acknowledged unlogged.
"""

from __future__ import annotations

from types import MappingProxyType

from tally_handler.delivery import MalformedDelivery
from tally_handler.outcomes import Outcome

__all__ = [
    "OUTCOME_OF",
    "ConfigError",
    "ListingOrderError",
    "LogWriteFailed",
    "MalformedDelivery",
    "NotTallys",
    "PreconditionFailed",
    "PrefixOutsideLayout",
    "RegistryUnavailable",
    "SpecError",
    "TallyError",
    "TransientError",
    "UnknownWorkflow",
    "UnsatisfiableSpec",
    "outcome_of",
]


class TallyError(Exception):
    """Base of every error the event handler raises on purpose."""


class TransientError(TallyError):
    """A dependency failed in a way a redelivery can repair."""


class RegistryUnavailable(TransientError):
    """The registry timed out or answered 5xx."""


class LogWriteFailed(TransientError):
    """The event log row could not be written; the delivery must not be acknowledged."""


class UnknownWorkflow(TallyError):
    """The registry answered 4xx for the workflow version."""


class ConfigError(TallyError, ValueError):
    """The environment is invalid; ``problems`` names every variable and what to set."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "the event handler's configuration is invalid:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
        self.problems = problems


class PrefixOutsideLayout(TallyError, ValueError):
    """A reconcile request's prefix is not under the layout's root: no run folder is there."""


class UnsatisfiableSpec(TallyError, ValueError):
    """The spec requires a name tally reserves: no run of it can ever complete."""


class NotTallys(TallyError, ValueError):
    """The object is not one tally wrote (or not of this format); the message says what to do."""


class SpecError(TallyError, ValueError):
    """The registry answered something that is not a usable spec."""


class ListingOrderError(TallyError, ValueError):
    """Entries arrived out of order: the walk's "missing" proofs would be wrong."""


class PreconditionFailed(TallyError):
    """A generation precondition did not hold (HTTP 412): another writer got there first."""


# Error type -> outcome of the delivery it ends, looked up along the type's MRO (the nearest row
# wins).
_OUTCOME_OF: dict[type[BaseException], Outcome] = {
    MalformedDelivery: Outcome.REJECTED,
    TransientError: Outcome.DEFERRED,
    UnknownWorkflow: Outcome.UNKNOWN_WORKFLOW,
    ConfigError: Outcome.DEFERRED,
    PrefixOutsideLayout: Outcome.REJECTED,
    UnsatisfiableSpec: Outcome.BLOCKED,
    NotTallys: Outcome.BLOCKED,
    Exception: Outcome.DEFERRED,  # a bug: logged at ERROR, redelivered
}


def outcome_of(exc: BaseException) -> Outcome:
    for kind in type(exc).__mro__:
        if kind in OUTCOME_OF:
            return OUTCOME_OF[kind]
    raise TypeError(f"{type(exc).__name__} is not an Exception: it ends the process") from exc


OUTCOME_OF = MappingProxyType(_OUTCOME_OF)
