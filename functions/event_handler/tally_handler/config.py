"""The event handler's configuration, read once from environment variables (docs/design.md).

``Config.from_env`` reports every missing or invalid variable at once, each with what to set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tally_handler.errors import ConfigError
from tally_handler.faults import Faults
from tally_handler.layout import DEFAULT_TEMPLATE, TALLY_FOLDER, Layout

__all__ = [
    "CLAIM_LEASE_SECONDS",
    "COMPLETIONS_TOPIC",
    "EVENTS_TABLE",
    "FAILURE_MARKER",
    "FAULTS",
    "LAYOUT",
    "MANIFEST_NAME",
    "MAX_DELIVERY_ATTEMPTS",
    "OBJECT_EVENTS_TOPIC",
    "OUTPUTS_BUCKET",
    "PRESENCE_CACHE_RUNS",
    "PROJECT",
    "RECONCILE_MAX_RUNS",
    "REGISTRY_AUTH",
    "REGISTRY_AUTH_MODES",
    "REGISTRY_URL",
    "REVISION_QUIET_SECONDS",
    "RUNS_TABLE",
    "SETTINGS",
    "Config",
    "ConfigError",
]

# Environment variable names: every one is read below (a Terraform contract test scans for them).
PROJECT = "TALLY_PROJECT"
OUTPUTS_BUCKET = "TALLY_OUTPUTS_BUCKET"
REGISTRY_URL = "TALLY_REGISTRY_URL"
REGISTRY_AUTH = "TALLY_REGISTRY_AUTH"
COMPLETIONS_TOPIC = "TALLY_COMPLETIONS_TOPIC"
EVENTS_TABLE = "TALLY_EVENTS_TABLE"
RUNS_TABLE = "TALLY_RUNS_TABLE"
LAYOUT = "TALLY_LAYOUT"
MANIFEST_NAME = "TALLY_MANIFEST_NAME"
FAILURE_MARKER = "TALLY_FAILURE_MARKER"
CLAIM_LEASE_SECONDS = "TALLY_CLAIM_LEASE_SECONDS"
MAX_DELIVERY_ATTEMPTS = "TALLY_MAX_DELIVERY_ATTEMPTS"
RECONCILE_MAX_RUNS = "TALLY_RECONCILE_MAX_RUNS"
OBJECT_EVENTS_TOPIC = "TALLY_OBJECT_EVENTS_TOPIC"
PRESENCE_CACHE_RUNS = "TALLY_PRESENCE_CACHE_RUNS"
REVISION_QUIET_SECONDS = "TALLY_REVISION_QUIET_SECONDS"
FAULTS = "TALLY_FAULTS"  # test-only: never set by Terraform

REGISTRY_AUTH_MODES = ("id-token", "none")


@dataclass(frozen=True, slots=True)
class Config:
    project: str
    outputs_bucket: str
    registry_url: str
    registry_auth: str
    completions_topic: str
    events_table: str
    runs_table: str
    layout: Layout
    manifest_name: str
    failure_marker: str
    claim_lease_seconds: int
    max_delivery_attempts: int
    reconcile_max_runs: int
    object_events_topic: str | None
    presence_cache_runs: int
    revision_quiet_seconds: float
    faults: Faults

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        values: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            raw = environ.get(setting.env, "").strip()
            if not raw and setting.default is None:
                problems.append(f"{setting.env} is not set: set it to {setting.meaning}")
                continue
            try:
                values[setting.field] = setting.parse(raw or setting.default or "")
            except ValueError as error:
                problems.append(f"{setting.env}={raw!r} is invalid: {error}")
        if not problems and values["manifest_name"] == values["failure_marker"]:
            problems.append(
                f"{MANIFEST_NAME} and {FAILURE_MARKER} are both {values['manifest_name']!r}: "
                "give the manifest and the failure marker different names"
            )
        if problems:
            raise ConfigError(problems)
        return cls(**values)


# The registry's config.py repeats _Setting, the reading loop and _text: it is deployed apart and
# imports nothing of the handler. tally_cli/config.py has its own (None there means unset, not
# required). tests/unit/test_settings_tables.py holds the three tables to one shape.
@dataclass(frozen=True, slots=True)
class _Setting:
    env: str
    field: str
    meaning: str  # what to set, for "is not set" errors
    parse: Callable[[str], Any]
    default: str | None = None  # None: required


def _text(value: str) -> str:
    if any(char.isspace() for char in value):
        raise ValueError("it must not contain spaces")
    return value


def _bucket(value: str) -> str:
    if value.startswith("gs://") or "/" in value:
        raise ValueError("give the bare bucket name, without gs:// or a path")
    return _text(value)


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("give an http:// or https:// URL")
    return value.rstrip("/")


def _auth(value: str) -> str:
    if value not in REGISTRY_AUTH_MODES:
        raise ValueError(f"use one of {', '.join(REGISTRY_AUTH_MODES)}")
    return value


def _topic(value: str) -> str:
    if "/" in value:
        raise ValueError("give the topic id (short name), not projects/.../topics/...")
    return _text(value)


def _table(value: str) -> str:
    parts = value.rsplit(".", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError("give the table as project.dataset.table")
    return _text(value)


def _optional_topic(value: str) -> str | None:
    return _topic(value) if value else None


def _count(value: str) -> int:
    if not value.isdigit():
        raise ValueError("give a whole number (0 turns it off)")
    return int(value)


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("give a number of seconds, e.g. 30 or 0.5 (0 turns it off)") from None
    if not 0 <= number <= 86400:
        raise ValueError("give a number of seconds between 0 and 86400")
    return number


def _layout(value: str) -> Layout:
    return Layout.parse(value)


def _run_folder_name(value: str) -> str:
    if value.startswith("/") or value.endswith("/") or value.startswith(TALLY_FOLDER):
        raise ValueError(
            f"give a name inside the run folder, not starting with / or {TALLY_FOLDER}"
        )
    return value


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("give a positive whole number") from None
    if number < 1:
        raise ValueError("give a positive whole number")
    return number


SETTINGS: tuple[_Setting, ...] = (
    _Setting(PROJECT, "project", "the project id of the topics and tables", _text),
    _Setting(
        OUTPUTS_BUCKET, "outputs_bucket", "the bucket the workflows write to (bare name)", _bucket
    ),
    _Setting(REGISTRY_URL, "registry_url", "the base URL of the registry function", _url),
    _Setting(REGISTRY_AUTH, "registry_auth", "id-token or none", _auth, "id-token"),
    _Setting(COMPLETIONS_TOPIC, "completions_topic", "the topic id of run completions", _topic),
    _Setting(EVENTS_TABLE, "events_table", "the events table, project.dataset.events", _table),
    _Setting(RUNS_TABLE, "runs_table", "the runs table, project.dataset.runs", _table),
    _Setting(LAYOUT, "layout", "the object name template", _layout, DEFAULT_TEMPLATE),
    _Setting(MANIFEST_NAME, "manifest_name", "the manifest name", _run_folder_name, "output.json"),
    _Setting(
        FAILURE_MARKER, "failure_marker", "the failure marker name", _run_folder_name, "_FAILED"
    ),
    _Setting(CLAIM_LEASE_SECONDS, "claim_lease_seconds", "seconds", _positive, "600"),
    _Setting(MAX_DELIVERY_ATTEMPTS, "max_delivery_attempts", "attempts", _positive, "5"),
    _Setting(RECONCILE_MAX_RUNS, "reconcile_max_runs", "runs", _positive, "500"),
    _Setting(
        OBJECT_EVENTS_TOPIC,
        "object_events_topic",
        "the object-events topic id, where reconciliation queues its next page",
        _optional_topic,
        "",
    ),
    _Setting(PRESENCE_CACHE_RUNS, "presence_cache_runs", "runs", _count, "1000"),
    _Setting(REVISION_QUIET_SECONDS, "revision_quiet_seconds", "seconds", _seconds, "30"),
    _Setting(FAULTS, "faults", "the fault injection setting", Faults.parse, ""),
)
