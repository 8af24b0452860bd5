"""Where the CLI finds the platform: explicit flags, then environment variables, then an env file
(``.devstack/env``, written by ``make run``), then defaults.

The env file is read when it is named (``--env-file`` / ``TALLY_ENV_FILE``), or found at
``./.devstack/env`` or in the checkout the CLI runs from while no platform variable is set in the
environment: so ``tally`` works against ``make run`` out of the box, and never silently mixes a
local file with a real project's environment. Emulator variables unset means real Google APIs with
Application Default Credentials.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tally_handler import adapters
from tally_handler import config as handler

from tally_cli.errors import ConfigError
from tally_cli.resources import DEFAULT_DATASET, ResourceNames

__all__ = [
    "BIGQUERY_ENDPOINT",
    "CHECKOUT",
    "COMPLETIONS_TOPIC",
    "DATASET",
    "DEAD_LETTER_SUBSCRIPTION",
    "ENV_FILE",
    "ENV_FILE_VAR",
    "FAILURE_MARKER",
    "FLAGS",
    "LAYOUT",
    "MANIFEST_NAME",
    "OBJECT_EVENTS_TOPIC",
    "OUTPUTS_BUCKET",
    "PLATFORM_VARS",
    "PROJECT",
    "PUBSUB_EMULATOR",
    "REGISTRY_TOKEN",
    "REGISTRY_URL",
    "SETTINGS",
    "STORAGE_EMULATOR",
    "Settings",
    "find_env_file",
    "load",
    "read_env_file",
]

CHECKOUT = Path(__file__).resolve().parent.parent
ENV_FILE = Path(".devstack") / "env"

# Environment variable names. Those the event handler reads too are its own constants: the CLI
# runs the handler's code with the same values (reconcile --local, status).
PROJECT = handler.PROJECT
DATASET = "TALLY_DATASET"
REGISTRY_URL = handler.REGISTRY_URL
REGISTRY_TOKEN = "TALLY_REGISTRY_TOKEN"  # noqa: S105 (a variable name)
OUTPUTS_BUCKET = handler.OUTPUTS_BUCKET
OBJECT_EVENTS_TOPIC = handler.OBJECT_EVENTS_TOPIC
COMPLETIONS_TOPIC = handler.COMPLETIONS_TOPIC
DEAD_LETTER_SUBSCRIPTION = "TALLY_DEAD_LETTER_SUBSCRIPTION"
LAYOUT = handler.LAYOUT
MANIFEST_NAME = handler.MANIFEST_NAME
FAILURE_MARKER = handler.FAILURE_MARKER
STORAGE_EMULATOR = "STORAGE_EMULATOR_HOST"  # read by Google's Storage client too
PUBSUB_EMULATOR = "PUBSUB_EMULATOR_HOST"  # read by Google's Pub/Sub client too
BIGQUERY_ENDPOINT = adapters.BIGQUERY_ENDPOINT  # the local BigQuery emulator (test-only)
ENV_FILE_VAR = "TALLY_ENV_FILE"  # where to read the settings from (not a setting itself)

# Setting -> its flag, where the flag's name differs from the setting's.
FLAGS = {"outputs_bucket": "--bucket", "registry_token": "--token"}
# Any of these in the environment means "configured": the env file is not looked for.
PLATFORM_VARS = (PROJECT, REGISTRY_URL, STORAGE_EMULATOR, PUBSUB_EMULATOR, BIGQUERY_ENDPOINT)


@dataclass(frozen=True, slots=True)
class _Setting:
    """The shape of the functions' settings tables (tally_handler.config, tally_registry.config).

    Repeated, not imported: here a None default means unset, not required, and the functions'
    copies are private. tests/unit/test_settings_tables.py holds the three tables to one shape.
    """

    env: str
    field: str
    meaning: str  # what to set, for "is not configured" errors
    parse: Callable[[str], Any]
    default: str | None = None  # None: unset (a command that needs it says what to set)


def _text(value: str) -> str:
    return value.strip()


def _url(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("give an http:// or https:// URL")
    return value.rstrip("/")


def _address(value: str) -> str:
    return value.strip().rstrip("/")


def _handler_default(env: str) -> str | None:
    """The event handler's default: the CLI reads the run folder as the handler does."""
    return next(s.default for s in handler.SETTINGS if s.env == env)


# Terraform's names for the default prefix (the CLI has no prefix: pass names that differ).
_TERRAFORM = ResourceNames(project="")

SETTINGS: tuple[_Setting, ...] = (
    _Setting(PROJECT, "project", "the project of tally's resources", _text),
    _Setting(DATASET, "dataset", "the BigQuery dataset id", _text, DEFAULT_DATASET),
    _Setting(REGISTRY_URL, "registry_url", "the base URL of the registry function", _url),
    _Setting(REGISTRY_TOKEN, "registry_token", "an ID token for the registry", _text),
    _Setting(OUTPUTS_BUCKET, "outputs_bucket", "the bucket the workflows write to", _text),
    _Setting(
        OBJECT_EVENTS_TOPIC,
        "object_events_topic",
        "the object-events topic",
        _text,
        _TERRAFORM.object_events_topic,
    ),
    _Setting(
        COMPLETIONS_TOPIC,
        "completions_topic",
        "the run completions topic",
        _text,
        _TERRAFORM.completions_topic,
    ),
    _Setting(
        DEAD_LETTER_SUBSCRIPTION,
        "dead_letter_subscription",
        "the dead-letter subscription",
        _text,
        _TERRAFORM.dead_letter_subscription,
    ),
    _Setting(LAYOUT, "layout", "the object name template", _text, _handler_default(LAYOUT)),
    _Setting(
        MANIFEST_NAME, "manifest_name", "the manifest name", _text, _handler_default(MANIFEST_NAME)
    ),
    _Setting(
        FAILURE_MARKER,
        "failure_marker",
        "the failure marker name",
        _text,
        _handler_default(FAILURE_MARKER),
    ),
    _Setting(STORAGE_EMULATOR, "storage_emulator", "the Storage emulator's address", _address),
    _Setting(PUBSUB_EMULATOR, "pubsub_emulator", "the Pub/Sub emulator's host:port", _text),
    _Setting(BIGQUERY_ENDPOINT, "bigquery_endpoint", "the BigQuery emulator's URL", _address),
)
_BY_FIELD = {s.field: s for s in SETTINGS}


def _default(name: str) -> Any:
    return field(default=_BY_FIELD[name].default)


@dataclass
class Settings:
    project: str | None = _default("project")
    dataset: str = _default("dataset")
    registry_url: str | None = _default("registry_url")
    registry_token: str | None = _default("registry_token")
    outputs_bucket: str | None = _default("outputs_bucket")
    object_events_topic: str = _default("object_events_topic")
    completions_topic: str = _default("completions_topic")
    dead_letter_subscription: str = _default("dead_letter_subscription")
    layout: str = _default("layout")
    manifest_name: str = _default("manifest_name")
    failure_marker: str = _default("failure_marker")
    storage_emulator: str | None = _default("storage_emulator")
    pubsub_emulator: str | None = _default("pubsub_emulator")
    bigquery_endpoint: str | None = _default("bigquery_endpoint")
    timeout: float = 30.0  # a flag only (--timeout)
    # Where each value came from ("--flag", "env TALLY_X", "file .devstack/env", "default").
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def require(self, name: str) -> str:
        value = getattr(self, name)
        if not value and name == "project":
            value = self.project = _default_project()
            self.sources["project"] = "Application Default Credentials"
        if not value:
            flag = FLAGS.get(name, "--" + name.replace("_", "-"))
            raise ConfigError(
                f"{name.replace('_', ' ')} is not configured: pass {flag} or set "
                f"{_BY_FIELD[name].env} (for the local platform: make run, then run tally from the "
                "checkout, or source .devstack/env)"
            )
        return str(value)

    @property
    def dataset_ref(self) -> str:
        return f"{self.require('project')}.{self.dataset}"

    def table(self, name: str) -> str:
        return f"{self.dataset_ref}.{name}"

    def topic_path(self, name: str) -> str:
        return (
            name
            if name.startswith("projects/")
            else f"projects/{self.require('project')}/topics/{name}"
        )

    def subscription_path(self, name: str) -> str:
        if name.startswith("projects/"):
            return name
        return f"projects/{self.require('project')}/subscriptions/{name}"

    def where(self, name: str) -> str:
        """`value (from source)`, for error messages that say what to check."""
        return f"{getattr(self, name)} (from {self.source(name)})"


def _default_project() -> str | None:
    """The project of Application Default Credentials (gcloud's), when there are any."""
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            return google.auth.default()[1]
        except DefaultCredentialsError:
            return None
    except ImportError:  # pragma: no cover - google-auth is a dependency
        return None


def read_env_file(path: Path) -> dict[str, str]:
    """`export NAME=value` / `NAME=value` lines, as `.devstack/env` holds them."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the env file {path}: {exc.strerror}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"{path}:{number}: expected NAME=value, got {raw!r}")
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        values[name] = parts[0] if parts else ""
    return values


def find_env_file(environ: Mapping[str, str], cwd: Path) -> Path | None:
    if environ.get(ENV_FILE_VAR):
        return Path(environ[ENV_FILE_VAR])
    if any(environ.get(name) for name in PLATFORM_VARS):
        return None
    for candidate in (cwd / ENV_FILE, CHECKOUT / ENV_FILE):
        if candidate.is_file():
            return candidate
    return None


def load(
    flags: Mapping[str, object | None],
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve every setting: flags, then environment, then the env file, then defaults."""
    environ = os.environ if environ is None else environ
    path = env_file or find_env_file(environ, cwd or Path.cwd())
    from_file = read_env_file(path) if path is not None else {}
    settings = Settings()
    for setting in SETTINGS:
        name, var = setting.field, setting.env
        flag = flags.get(name)
        if flag not in (None, ""):
            raw, source = str(flag), FLAGS.get(name, "--" + name.replace("_", "-"))
        elif environ.get(var):
            raw, source = environ[var], f"env {var}"
        elif from_file.get(var):
            raw, source = from_file[var], f"file {path}"
        else:
            continue
        try:
            value = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source} {raw!r} is invalid: {exc}") from None
        setattr(settings, name, value)
        settings.sources[name] = source
    if flags.get("timeout") not in (None, ""):
        settings.timeout = flags["timeout"]  # type: ignore[assignment]
        settings.sources["timeout"] = "--timeout"
    try:
        settings.timeout = float(settings.timeout)
    except ValueError:
        raise ConfigError(
            f"--timeout must be a number of seconds, got {settings.timeout!r}"
        ) from None
    if settings.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    return settings
