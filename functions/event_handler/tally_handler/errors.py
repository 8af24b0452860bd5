"""The event handler's exceptions, in one tree; each maps to one outcome (``OUTCOME_OF``).

    TallyError
     ├── TransientError            retry later: the delivery is deferred (503, redelivered)
     │    ├── RegistryUnavailable  the registry timed out or answered 5xx
     │    └── LogWriteFailed       BigQuery refused or did not take the row
     ├── UnknownWorkflow           the registry does not know the workflow version (4xx)
     └── PreconditionFailed        a Storage write lost its generation precondition (412)

Adapters turn their clients' errors into these; the protocol acts on them. Anything else
escaping a delivery is a bug: logged at ERROR and deferred, never acknowledged unlogged.
"""

from __future__ import annotations


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


class PreconditionFailed(TallyError):
    """A generation precondition did not hold (HTTP 412): another writer got there first."""
