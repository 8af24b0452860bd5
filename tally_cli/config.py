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
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from tally_cli.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parent.parent
ENV_FILE = Path(".devstack") / "env"

# Setting -> environment variable. The same names as the event handler and .devstack/env.
ENV_VARS = {
    "project": "TALLY_PROJECT",
    "dataset": "TALLY_DATASET",
    "registry_url": "TALLY_REGISTRY_URL",
    "registry_token": "TALLY_REGISTRY_TOKEN",
    "outputs_bucket": "TALLY_OUTPUTS_BUCKET",
    "object_events_topic": "TALLY_OBJECT_EVENTS_TOPIC",
    "completions_topic": "TALLY_COMPLETIONS_TOPIC",
    "dead_letter_subscription": "TALLY_DEAD_LETTER_SUBSCRIPTION",
    "layout": "TALLY_LAYOUT",
    "manifest_name": "TALLY_MANIFEST_NAME",
    "failure_marker": "TALLY_FAILURE_MARKER",
    "storage_emulator": "STORAGE_EMULATOR_HOST",
    "pubsub_emulator": "PUBSUB_EMULATOR_HOST",
    "bigquery_endpoint": "TALLY_BIGQUERY_ENDPOINT",
}
# Setting -> its flag, where the flag's name differs from the setting's.
FLAGS = {"outputs_bucket": "--bucket", "registry_token": "--token"}
# Any of these in the environment means "configured": the env file is not looked for.
PLATFORM_VARS = (
    "TALLY_PROJECT",
    "TALLY_REGISTRY_URL",
    "STORAGE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "TALLY_BIGQUERY_ENDPOINT",
)


@dataclass
class Settings:
    project: str | None = None
    dataset: str = "tally"
    registry_url: str | None = None
    registry_token: str | None = None
    outputs_bucket: str | None = None
    object_events_topic: str = "object-events"
    completions_topic: str = "run-completions"
    dead_letter_subscription: str = "object-events-dead-letter-pull"
    layout: str = "{workflow}/{version}/{run_id}/{path}"
    manifest_name: str = "output.json"
    failure_marker: str = "_FAILED"
    storage_emulator: str | None = None
    pubsub_emulator: str | None = None
    bigquery_endpoint: str | None = None
    timeout: float = 30.0
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
                f"{ENV_VARS[name]} (for the local platform: make run, then run tally from the "
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
    if environ.get("TALLY_ENV_FILE"):
        return Path(environ["TALLY_ENV_FILE"])
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
    names = {f.name for f in fields(Settings)} - {"sources"}
    for name in names:
        flag = flags.get(name)
        var = ENV_VARS.get(name)
        if flag not in (None, ""):
            value, source = flag, FLAGS.get(name, "--" + name.replace("_", "-"))
        elif var and environ.get(var):
            value, source = environ[var], f"env {var}"
        elif var and from_file.get(var):
            value, source = from_file[var], f"file {path}"
        else:
            continue
        setattr(settings, name, value)
        settings.sources[name] = source
    if settings.registry_url:
        settings.registry_url = settings.registry_url.rstrip("/")
    try:
        settings.timeout = float(settings.timeout)
    except ValueError:
        raise ConfigError(
            f"--timeout must be a number of seconds, got {settings.timeout!r}"
        ) from None
    if settings.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    return settings
