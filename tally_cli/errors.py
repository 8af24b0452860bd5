"""Errors the commands turn into one line on stderr and an exit code (documented in main.py)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # the command ran, and what it checked is not so (run missing, conflict)
EXIT_USAGE = 2  # bad arguments or configuration (click's own usage errors exit 2 too)
EXIT_UNREACHABLE = 3  # a dependency (registry, Storage, Pub/Sub, BigQuery) failed or is unreachable


class TallyError(Exception):
    """An expected failure: `str(error)` says what to do; `exit_code` is one of the above."""

    exit_code = EXIT_CHECK_FAILED


class CheckFailed(TallyError):
    exit_code = EXIT_CHECK_FAILED


class ConfigError(TallyError):
    exit_code = EXIT_USAGE


class Unreachable(TallyError):
    exit_code = EXIT_UNREACHABLE
