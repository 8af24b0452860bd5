"""The HTTP edge of the event handler: request in, one event log row and one log line out.

Configuration is read once; the Google clients are created at the first delivery, not at import,
so that a cold start stays small. The status code tells Pub/Sub what to do: 2xx acknowledges,
503 (deferred, or the log write failed) makes it redeliver, 500 is a crash (fault injection).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tally_handler import __version__ as HANDLER_VERSION
from tally_handler.announce import Announcer
from tally_handler.delivery import (
    Delivery,
    MalformedDelivery,
    Reconcile,
    Source,
    parse_delivery,
    rfc3339,
)
from tally_handler.errors import LogWriteFailed, TransientError, outcome_of
from tally_handler.faults import InjectedFault
from tally_handler.handler import Handler
from tally_handler.layout import Run, RunOutput
from tally_handler.outcomes import Handled, Outcome
from tally_handler.ports import EventLog, Publisher, SharedReads, Storage
from tally_handler.reconcile import ReconcileReport
from tally_handler.rows import StorageOps, event_row
from tally_handler.spec import Spec

__all__ = ["App", "run_event"]

if TYPE_CHECKING:
    from tally_handler.config import Config


class App:
    """The function: ports passed in (tests), or the Google adapters created at first use."""

    def __init__(
        self,
        config: Config,
        *,
        storage: Storage | None = None,
        publisher: Publisher | None = None,
        event_log: EventLog | None = None,
        spec_for: Callable[[str, str], Spec] | None = None,
        reconcile_queue: Publisher | None = None,
    ) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._handler: Handler | None = None
        self._ports = (storage, publisher, event_log, spec_for, reconcile_queue)
        self._event_log: EventLog | None = None
        self._queue: Publisher | None = None

    def wire(self) -> tuple[Handler, EventLog]:
        with self._lock:
            if self._handler is None or self._event_log is None:
                from tally_handler import adapters

                c = self.config
                storage, publisher, event_log, spec_for, queue = self._ports
                storage = SharedReads(storage or adapters.StorageGateway(c.project))
                publisher = publisher or adapters.PubSubPublisher(c.project, c.completions_topic)
                event_log = event_log or adapters.EventLog(c.project, c.events_table, c.runs_table)
                if spec_for is None:
                    spec_for = adapters.RegistryClient(c.registry_url, c.registry_auth).spec
                if queue is None and c.object_events_topic:
                    queue = adapters.PubSubPublisher(c.project, c.object_events_topic)
                announcer = Announcer(c, storage, publisher, event_log, HANDLER_VERSION)
                self._queue = queue
                self._event_log = event_log
                self._handler = Handler(c, storage, spec_for, announcer)
            return self._handler, self._event_log

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        received = datetime.now(UTC)
        started = time.perf_counter()
        handler, event_log = self.wire()
        ops = StorageOps()
        notification = None
        try:
            delivery = parse_delivery(body, headers, self.config.max_delivery_attempts)
        except MalformedDelivery as exc:
            delivery = exc.delivery
            result = Handled(outcome_of(exc), f"{exc.reason}; the message is acknowledged")
        else:
            notification = delivery.notification
            result = self._process(handler, event_log, delivery, ops, received)

        self.config.faults.maybe_fail("before_logging")
        row = event_row(
            delivery=delivery,
            notification=notification,
            run_output=result.run_output,
            outcome=result.outcome,
            detail=_detail(result.detail, delivery),
            storage_ops=ops,
            idempotency_key=_key(result),
            received_time=received,
            duration_ms=(time.perf_counter() - started) * 1000,
            handler_version=HANDLER_VERSION,
            revision=result.revision,
            run_state=result.run_state,
        )
        status = result.outcome.http_status
        try:
            event_log.write_event(row)
        except LogWriteFailed as exc:
            status = Outcome.DEFERRED.http_status
            _log("ERROR", f"{exc}; not acknowledged, Pub/Sub redelivers", row)
            return status, {"outcome": "deferred", "detail": str(exc)}
        _log(result.log_severity, result.detail, _with_latency(row, result))
        return status, {"outcome": str(result.outcome), "detail": result.detail}

    def _process(
        self,
        handler: Handler,
        event_log: EventLog,
        delivery: Delivery,
        ops: StorageOps,
        received: datetime,
    ) -> Handled:
        try:
            if delivery.reconcile is not None:
                return self._reconcile(handler, event_log, delivery, ops, received)
            return handler.notification(delivery, ops)
        except InjectedFault:
            raise
        except TransientError as exc:
            return Handled(outcome_of(exc), f"{exc}; Pub/Sub redelivers")
        except Exception as exc:  # a bug must not lose the delivery: log it, let Pub/Sub retry
            _log("ERROR", f"internal error: {exc!r}", {"delivery_id": delivery.delivery_id})
            return Handled(outcome_of(exc), f"internal error {type(exc).__name__}: {exc}")

    # _process's arguments again: this is its branch for reconcile requests, kept apart so that
    # _process's error handling reads at a glance.
    def _reconcile(
        self,
        handler: Handler,
        event_log: EventLog,
        delivery: Delivery,
        ops: StorageOps,
        received: datetime,
    ) -> Handled:
        from tally_handler.reconcile import reconcile_request

        queue = self._queue
        republish = None if queue is None else (lambda attrs: queue.publish(b"{}", attrs))

        def record_run(result: Handled, run: Run) -> None:
            # One row and one log line per run, as for a delivery (log-based metrics count them).
            row = run_event(delivery, result, run, received)
            event_log.write_event(row)
            _log(result.log_severity, result.detail, _with_latency(row, result))

        return reconcile_request(handler, delivery, ops, record_run, republish)

    def reconcile_locally(
        self, request: Reconcile, max_runs: int, dry_run: bool
    ) -> ReconcileReport:
        """One page of reconciliation in this process (`tally reconcile --local`), logged."""
        from tally_handler.reconcile import reconcile_runs

        handler, event_log = self.wire()
        now = datetime.now(UTC)
        delivery = Delivery(
            Source.PUBSUB_PUSH,
            f"cli-{uuid.uuid4().hex[:16]}",
            publish_time=rfc3339(now),
            reconcile=request,
        )
        bucket = self.config.outputs_bucket
        report = reconcile_runs(
            handler, delivery, bucket, request, max_runs, StorageOps(), dry_run=dry_run
        )
        for run, result in report.results:  # the CLI prints its own summary: no log lines
            event_log.write_event(run_event(delivery, result, run, now))
        return report


def run_event(delivery: Delivery, result: Handled, run: Run, received: datetime) -> dict[str, Any]:
    """The row of one run that reconciliation acted on (one of several rows of a request)."""
    return event_row(
        delivery,
        outcome=result.outcome,
        received_time=received,
        run_output=RunOutput(run.workflow, run.version, run.run_id, ""),
        detail=result.detail,
        idempotency_key=_key(result) or run.idempotency_key,
        handler_version=HANDLER_VERSION,
        row_key=run.key,
        revision=result.revision,
        run_state=result.run_state,
    )


def _key(result: Handled) -> str | None:
    """The idempotency key of the revision the delivery saw or announced."""
    if result.run is None:
        return None
    from tally_handler.manifest import revision_key

    return revision_key(result.run, result.revision or 1)


def _with_latency(row: dict[str, Any], result: Handled) -> dict[str, Any]:
    """The log line (not the table row) carries an announcement's completion latency."""
    if result.completion_seconds is None:
        return row
    return {**row, "completion_seconds": result.completion_seconds}


def _detail(detail: str, delivery: Delivery) -> str:
    if delivery.last_attempt and "dead-letter" not in detail:
        return (
            f"{detail} (last attempt: the next failure sends the message to the dead-letter topic)"
        )
    return detail


def _log(severity: str, message: str, row: dict[str, Any]) -> None:
    """One structured line on stdout; Cloud Logging reads `severity` and `message`."""
    fields = (
        "delivery_id",
        "delivery_attempt",
        "outcome",
        "workflow",
        "version",
        "run_id",
        "output_path",
        "storage_operations",
        "duration_ms",
        "completion_seconds",
    )
    entry = {"severity": severity, "message": message, "component": "event-handler"}
    entry.update({k: row[k] for k in fields if row.get(k) is not None})
    sys.stdout.write(json.dumps(entry, default=str) + "\n")
    sys.stdout.flush()
