"""Reconcile requests: a registration asks the event handler to reconcile the version's runs, so
that runs whose outputs landed before their spec are announced within seconds rather than at the
next scheduled reconcile.

A port (`ReconcileQueue`), its Pub/Sub adapter (google-cloud-pubsub is imported at the first
request: instances that only serve reads never load it) and an in-memory double for tests.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from tally_registry.errors import ReconcileError
from tally_registry.layout import RunLayout

__all__ = [
    "REQUEST_ATTRIBUTE",
    "MemoryReconcileQueue",
    "PubSubReconcileQueue",
    "ReconcileQueue",
    "reconcile_message",
]

REQUEST_ATTRIBUTE = "tally-request"  # the event handler's name for requests on object-events


class ReconcileQueue(Protocol):
    def request(self, workflow: str, version: str) -> None:
        """Queue a reconcile of the version's runs; raises ReconcileError when it cannot."""


def reconcile_message(
    workflow: str, version: str, layout: RunLayout
) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the request the event handler reads on the object-events topic."""
    attributes = {REQUEST_ATTRIBUTE: "reconcile", "workflow": workflow, "version": version}
    prefix = layout.version_prefix(workflow, version)
    if prefix is not None:
        # The same runs as a prefix: an event handler that reads only `prefix` reconciles this
        # version's runs rather than the whole bucket.
        attributes["prefix"] = prefix
    return b"{}", attributes


class PubSubReconcileQueue:
    """ReconcileQueue on a Pub/Sub topic (PUBSUB_EMULATOR_HOST is honoured by the client)."""

    # The same lazy-client shape as store.GcsStore: each adapter makes its Google client on first
    # use under a lock (the registry's cold start imports no client it does not need).
    def __init__(self, project: str, topic: str, layout: RunLayout, *, timeout: float = 10.0):
        self.topic_path = f"projects/{project}/topics/{topic}"
        self._layout = layout
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: Any = None

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1  # lazy: first registration only

                # One message per registration: send it at once rather than after a batch delay.
                settings = pubsub_v1.types.BatchSettings(max_messages=1)
                self._client = pubsub_v1.PublisherClient(batch_settings=settings)
            return self._client

    def request(self, workflow: str, version: str) -> None:
        data, attributes = reconcile_message(workflow, version, self._layout)
        try:
            future = self._get_client().publish(self.topic_path, data, **attributes)
            future.result(timeout=self._timeout)
        except Exception as exc:
            raise ReconcileError(
                f"publishing to {self.topic_path} failed ({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc


class MemoryReconcileQueue:
    """ReconcileQueue that records requests, or raises `fail` when set (tests, benchmarks)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def request(self, workflow: str, version: str) -> None:
        if self.fail is not None:
            raise self.fail
        with self._lock:
            self.requests.append((workflow, version))
