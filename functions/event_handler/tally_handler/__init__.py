"""tally's event handler: a pure core (this package) and the I/O adapters around it.

The modules listed here do no I/O and import no Google client, so they are unit-tested without
servers and keep the function's cold start small:

- ``outcomes``: the outcome vocabulary and how each outcome is acknowledged and logged;
- ``delivery``: HTTP body + headers -> ``Delivery`` (Pub/Sub push or CloudEvent);
- ``layout``: object name <-> run output, run keys and prefixes;
- ``spec``: a workflow version's expected outputs, as the registry returns them;
- ``completeness``: the listing state machine that decides whether a run is complete;
- ``manifest``: the manifest (one revision's announced bytes) and the announcement record;
- ``announce``: the announcement protocol (claim, publish, log, write, mark; revisions) over
  ``ports``, with in-memory doubles in ``memory`` and the exception tree in ``errors``;
- ``rows``: BigQuery rows for the ``events`` and ``runs`` tables;
- ``faults``: test-only fault injection;
- ``config``: configuration read once from the environment.
"""

__all__ = []

__version__ = "0.1.0"
