"""The CLI's exceptions, in one tree; ``EXIT_STATUS`` maps each to the exit status of `tally`.

    TallyError                 1  an expected failure: one line on stderr, never a traceback
     ├── CheckFailed           1  the command ran, and what it checked is not so (run missing,
     │    │                       spec refused, workflow unknown)
     │    └── StepFailed       1  a step of `tally check` failed; its verdict says what to fix
     ├── ConfigError           2  bad arguments or configuration (click's usage errors exit 2 too)
     └── Unreachable           3  a dependency (registry, Storage, Pub/Sub, BigQuery) failed or is
                                  unreachable
    KeyboardInterrupt        130  interrupted

Anything else is a bug: Python prints its traceback and exits 1.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STATUS",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CheckFailed",
    "ConfigError",
    "StepFailed",
    "TallyError",
    "Unreachable",
    "exit_status",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class TallyError(Exception):
    """An expected failure: `str(error)` says what to do."""


class CheckFailed(TallyError):
    """The command ran, and what it checked is not so."""


class StepFailed(CheckFailed):
    """A step of `tally check` failed: `detail` says what happened, `fix` what to do."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class ConfigError(TallyError):
    """Bad arguments or configuration: the message names the flag or variable to set."""


class Unreachable(TallyError):
    """A dependency failed or is unreachable: the message names it and where its setting came
    from."""


# Error type -> exit status, looked up along the type's MRO (the nearest row wins).
EXIT_STATUS: dict[type[BaseException], int] = {
    TallyError: EXIT_CHECK_FAILED,
    ConfigError: EXIT_USAGE,
    Unreachable: EXIT_UNREACHABLE,
    KeyboardInterrupt: EXIT_INTERRUPTED,
}


def exit_status(exc: BaseException) -> int:
    """The exit status of an expected failure (KeyError for one the table does not name)."""
    for kind in type(exc).__mro__:
        if kind in EXIT_STATUS:
            return EXIT_STATUS[kind]
    raise KeyError(f"{type(exc).__name__} has no exit status: add it to EXIT_STATUS")
