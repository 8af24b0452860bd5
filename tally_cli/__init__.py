"""`tally`: the operator's command line for the tally platform (registry, runs, event log, replay).

Commands are thin: they parse arguments, call the client layer (config, registry, eventlog,
status, replay, reconcile) and render the result as a table or, with ``--json``, as JSON.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
