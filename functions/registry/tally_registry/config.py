"""Configuration, read once from environment variables (docs/design.md, "Registry").

One table of settings, as in the event handler's config; `Config.from_env` reports every missing
or invalid variable at once. TALLY_LAYOUT, TALLY_MANIFEST_NAME and TALLY_FAILURE_MARKER are the
event handler's variables, parsed with its rules: Terraform sets both functions alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tally_registry.errors import ConfigError
from tally_registry.layout import DEFAULT_LAYOUT, DEFAULT_TEMPLATE, TALLY_FOLDER, RunLayout
from tally_registry.spec import RunFolder

__all__ = [
    "AUDIENCE",
    "BUCKET",
    "CERTS_URL",
    "FAILURE_MARKER",
    "GOOGLE_CERTS_URL",
    "LAYOUT",
    "LIST_TTL_SECONDS",
    "MANIFEST_NAME",
    "OBJECT_EVENTS_TOPIC",
    "PROJECT",
    "SETTINGS",
    "WRITERS",
    "Config",
]

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"

# Environment variable names: whole literals (a Terraform contract test scans for them).
BUCKET = "TALLY_REGISTRY_BUCKET"
AUDIENCE = "TALLY_REGISTRY_AUDIENCE"
WRITERS = "TALLY_REGISTRY_WRITERS"
CERTS_URL = "TALLY_REGISTRY_CERTS_URL"
LIST_TTL_SECONDS = "TALLY_REGISTRY_LIST_TTL_SECONDS"
PROJECT = "TALLY_PROJECT"
OBJECT_EVENTS_TOPIC = "TALLY_OBJECT_EVENTS_TOPIC"
LAYOUT = "TALLY_LAYOUT"
MANIFEST_NAME = "TALLY_MANIFEST_NAME"
FAILURE_MARKER = "TALLY_FAILURE_MARKER"


@dataclass(frozen=True)
class Config:
    bucket: str
    audience: str
    writers: frozenset[str] = frozenset()
    certs_url: str = GOOGLE_CERTS_URL
    list_ttl: float = 10.0
    project: str | None = None  # of the object-events topic (and of the Storage client)
    object_events_topic: str | None = None  # None: registrations request no reconcile
    layout: RunLayout = DEFAULT_LAYOUT
    manifest_name: str = "output.json"
    failure_marker: str = "_FAILED"
    emulator_host: str | None = None  # test-only: STORAGE_EMULATOR_HOST

    @property
    def run_folder(self) -> RunFolder:
        return RunFolder(self.manifest_name, self.failure_marker, self.layout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        values: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            raw = env.get(setting.env, "").strip()
            if not raw and setting.default is None:
                problems.append(f"{setting.env} is not set: set it to {setting.meaning}")
                continue
            try:
                values[setting.field] = setting.parse(raw or setting.default or "")
            except ValueError as exc:
                problems.append(f"{setting.env}={raw!r} is invalid: {exc}")
        if not problems:
            problems += _cross_problems(values)
        if problems:
            raise ConfigError("; ".join(problems) + " (docs/design.md, Configuration)")
        # Google's client libraries fall back to GOOGLE_CLOUD_PROJECT; so does the Storage client.
        values["project"] = values["project"] or env.get("GOOGLE_CLOUD_PROJECT") or None
        return cls(**values, emulator_host=env.get("STORAGE_EMULATOR_HOST") or None)


def _cross_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    if values["manifest_name"] == values["failure_marker"]:
        problems.append(
            f"{MANIFEST_NAME} and {FAILURE_MARKER} are both {values['manifest_name']!r}: "
            "give the manifest and the failure marker different names"
        )
    if values["object_events_topic"] and not values["project"]:
        problems.append(
            f"{OBJECT_EVENTS_TOPIC} is set but {PROJECT} is not: set it to the topic's project"
        )
    return problems


# The event handler's config.py has the same _Setting, reading loop and _text: this function is
# deployed apart and imports nothing of it; tally_cli/config.py has its own (None there means
# unset, not required). tests/unit/test_settings_tables.py holds the three to one shape.
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


def _optional_text(value: str) -> str | None:
    return _text(value) if value else None


def _writers(value: str) -> frozenset[str]:
    return frozenset(w.strip().lower() for w in value.split(",") if w.strip())


def _seconds(value: str) -> float:
    # The event handler's rule (tally_handler/config.py).
    try:
        number = float(value)
    except ValueError:
        raise ValueError("give a number of seconds, e.g. 30 or 0.5 (0 turns it off)") from None
    if not 0 <= number <= 86400:
        raise ValueError("give a number of seconds between 0 and 86400")
    return number


def _optional_topic(value: str) -> str | None:
    if "/" in value:
        raise ValueError("give the topic id (short name), not projects/.../topics/...")
    return _optional_text(value)


def _run_folder_name(value: str) -> str:
    # The event handler's rule (tally_handler/config.py): a name inside the run folder.
    if value.startswith("/") or value.endswith("/") or value.startswith(TALLY_FOLDER):
        raise ValueError(
            f"give a name inside the run folder, not starting with / or {TALLY_FOLDER}"
        )
    return value


SETTINGS: tuple[_Setting, ...] = (
    _Setting(BUCKET, "bucket", "the bucket holding the specs", _text),
    _Setting(AUDIENCE, "audience", "the registry's own URL (writers' token audience)", _text),
    _Setting(WRITERS, "writers", "comma-separated writer emails", _writers, ""),
    _Setting(CERTS_URL, "certs_url", "the token certificates' URL", _text, GOOGLE_CERTS_URL),
    _Setting(LIST_TTL_SECONDS, "list_ttl", "seconds", _seconds, "10"),
    _Setting(PROJECT, "project", "the project of the object-events topic", _optional_text, ""),
    _Setting(
        OBJECT_EVENTS_TOPIC,
        "object_events_topic",
        "the object-events topic id, where registrations request a reconcile",
        _optional_topic,
        "",
    ),
    _Setting(LAYOUT, "layout", "the object name template", RunLayout.parse, DEFAULT_TEMPLATE),
    _Setting(MANIFEST_NAME, "manifest_name", "the manifest name", _run_folder_name, "output.json"),
    _Setting(
        FAILURE_MARKER, "failure_marker", "the failure marker name", _run_folder_name, "_FAILED"
    ),
)
