"""Google clients built from the settings (emulators when configured), and one place that turns
their failures into an `Unreachable` error naming what to check."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tally_cli.config import Settings
from tally_cli.errors import TallyError, Unreachable

__all__ = ["EMULATOR_SETTING", "Clients", "dependency", "describe"]

# Dependency -> the setting that points at its emulator (unset: the real Google API).
EMULATOR_SETTING = {
    "Storage": "storage_emulator",
    "BigQuery": "bigquery_endpoint",
    "Pub/Sub": "pubsub_emulator",
}


def describe(settings: Settings, dependency: str) -> str:
    """Where the CLI looked for a dependency, for error messages."""
    if dependency == "registry":
        return f"the registry at {settings.where('registry_url')}"
    name = EMULATOR_SETTING[dependency]
    if getattr(settings, name):
        return f"the {dependency} emulator at {settings.where(name)}"
    return f"Google Cloud {dependency} (project {settings.project or '?'})"


def _reason(exc: BaseException) -> str:
    """The useful part of a client exception, on one line."""
    cause = getattr(exc, "cause", None)  # RetryError: the last attempt's error
    if cause is not None:
        return f"no answer within the timeout ({_reason(cause)})"
    text = str(getattr(exc, "message", None) or exc or type(exc).__name__)
    for known in ("Connection refused", "Name or service not known", "timed out"):
        if known in text:
            return known.lower()
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


def _hint(settings: Settings, dependency: str) -> str:
    if dependency == "registry":
        if "file" in settings.source("registry_url"):
            return "is the local platform still running (make run)?"
        return "check the URL (terraform output registry_url) and that the registry is up"
    name = EMULATOR_SETTING.get(dependency)
    if name and getattr(settings, name):
        if "file" in settings.source(name):
            return "is the local platform still running (make run)?"
        return "is the emulator running?"
    return (
        "check the project, the resource names and your credentials "
        "(gcloud auth application-default login)"
    )


@contextmanager
def dependency(settings: Settings, name: str) -> Iterator[None]:
    """Run a block that calls `name`; its failures become one actionable line (exit 3)."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        yield
    except TallyError:
        raise
    except (
        requests.RequestException,
        api.GoogleAPIError,
        auth.GoogleAuthError,
        concurrent.futures.TimeoutError,
        TimeoutError,
        ConnectionError,
    ) as exc:
        text = _reason(exc)
        if isinstance(exc, api.BadRequest | api.NotFound) and name == "BigQuery":
            hint = (
                f"check that dataset {settings.project}.{settings.dataset} has the tables and "
                "current views (make run creates them locally; Terraform in the cloud)"
            )
        elif isinstance(exc, api.NotFound):
            hint = "check the resource names (project, bucket, topic, subscription)"
        else:
            hint = _hint(settings, name)
        raise Unreachable(f"{describe(settings, name)} failed: {text}; {hint}") from None


class Clients:
    """Lazily built clients; one per kind per command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._made: dict[str, Any] = {}

    def storage(self) -> Any:
        if "storage" not in self._made:
            from google.cloud import storage

            endpoint = self.settings.storage_emulator
            with dependency(self.settings, "Storage"):
                if endpoint:
                    from google.auth.credentials import AnonymousCredentials

                    self._made["storage"] = storage.Client(
                        project=self.settings.project or "local",
                        credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": endpoint.rstrip("/")},
                    )
                else:
                    self._made["storage"] = storage.Client(project=self.settings.project)
        return self._made["storage"]

    def bigquery(self) -> Any:
        if "bigquery" not in self._made:
            from google.cloud import bigquery

            endpoint = self.settings.bigquery_endpoint
            project = self.settings.require("project")
            with dependency(self.settings, "BigQuery"):
                if endpoint:
                    from google.auth.credentials import AnonymousCredentials

                    self._made["bigquery"] = bigquery.Client(
                        project=project,
                        credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": endpoint.rstrip("/")},
                    )
                else:
                    self._made["bigquery"] = bigquery.Client(project=project)
        return self._made["bigquery"]

    def _pubsub_transport(self, kind: str) -> dict[str, Any]:
        host = self.settings.pubsub_emulator
        if not host:
            return {}
        import grpc  # the emulator speaks plain gRPC, without TLS or credentials

        channel = grpc.insecure_channel(host)
        if kind == "publisher":
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            return {"transport": PublisherGrpcTransport(channel=channel)}
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        return {"transport": SubscriberGrpcTransport(channel=channel)}

    def publisher(self) -> Any:
        if "publisher" not in self._made:
            from google.cloud import pubsub_v1

            with dependency(self.settings, "Pub/Sub"):
                self._made["publisher"] = pubsub_v1.PublisherClient(
                    batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.01),
                    **self._pubsub_transport("publisher"),
                )
        return self._made["publisher"]

    def subscriber(self) -> Any:
        if "subscriber" not in self._made:
            from google.cloud import pubsub_v1

            with dependency(self.settings, "Pub/Sub"):
                self._made["subscriber"] = pubsub_v1.SubscriberClient(
                    **self._pubsub_transport("subscriber")
                )
        return self._made["subscriber"]

    def retry(self) -> Any:
        """A retry policy bounded by --timeout: the clients' defaults retry for minutes."""
        from google.api_core.retry import Retry

        return Retry(timeout=self.settings.timeout, initial=0.2, maximum=2.0)
