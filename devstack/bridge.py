"""The push bridge: what a Pub/Sub push subscription with a dead-letter policy does in the cloud.

The Pub/Sub emulator (pstest) has no push delivery and no dead-letter policy, so the bridge pulls
from a subscription and POSTs the exact push envelope to the function:

    {"message": {"attributes", "data", "messageId", "message_id", "publishTime", "publish_time"},
     "subscription": "projects/p/subscriptions/s", "deliveryAttempt": n}

A 2xx response acknowledges the message. Anything else (or no answer) is redelivered after an
exponential backoff between `min_backoff` and `max_backoff` seconds (doubling from the minimum);
after `max_attempts` attempts the message is published, with its attributes, to the dead-letter
topic and acknowledged.

The local platform takes these from the subscription's retry policy (`RetryPolicy`, the defaults
of terraform/variables.tf's `event_subscription`: 10 s to 600 s, 5 attempts) with every duration
multiplied by one time factor (`TIME_FACTOR`, 0.01: 0.1 s to 6 s), so that a test waits seconds
where Pub/Sub waits minutes while the number of attempts, and so what a handler restart costs in
redeliveries rather than dead letters, stays as in the cloud. Factor 1 is the production timing.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import requests

log = logging.getLogger("devstack.bridge")


# Every duration of the push subscription's retry policy is multiplied by this on the local
# platform (TALLY_DEVSTACK_TIME_FACTOR overrides it; 1 is production timing).
TIME_FACTOR = 0.01


@dataclass(frozen=True)
class RetryPolicy:
    """A push subscription's retry and dead-letter policy, in seconds (terraform's defaults)."""

    min_backoff: float = 10.0
    max_backoff: float = 600.0
    max_attempts: int = 5

    def scaled(self, factor: float) -> RetryPolicy:
        return replace(
            self, min_backoff=self.min_backoff * factor, max_backoff=self.max_backoff * factor
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    message_id: str
    attempt: int
    status: int  # 0 when the function did not answer
    at: float


@dataclass(slots=True)
class _Held:
    ack_id: str
    message: Any  # google.pubsub_v1.PubsubMessage
    attempt: int = 0


@dataclass
class BridgeStats:
    attempts: list[Attempt] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    dead_lettered: set[str] = field(default_factory=set)
    suppressed: set[str] = field(default_factory=set)


def push_envelope(message: Any, subscription: str, attempt: int) -> dict[str, Any]:
    publish_time = message.publish_time.isoformat().replace("+00:00", "Z")
    body = {
        "attributes": dict(message.attributes),
        "data": base64.b64encode(message.data).decode(),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    return {"message": body, "subscription": subscription, "deliveryAttempt": attempt}


class PushBridge:
    # A constructor that stores its arguments: the same shape as the registry's GcsStore, by chance.
    def __init__(
        self,
        subscriber: Any,
        publisher: Any,
        subscription: str,
        endpoint: str,
        dead_letter_topic: str,
        max_attempts: int = 5,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        concurrency: int = 8,
        timeout: float = 60.0,
        transport: Callable[[bytes, dict[str, str], float], int] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.publisher = publisher
        self.subscription = subscription
        self.endpoint = endpoint
        self.dead_letter_topic = dead_letter_topic
        self.max_attempts = max_attempts
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency
        self.timeout = timeout
        # POSTs a body to the endpoint and returns the HTTP status (the local platform routes each
        # delivery to one of the handler's instances); by default a plain POST to `endpoint`.
        self.transport = transport or self._post
        self.stats = BridgeStats()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._due: list[tuple[float, int, _Held]] = []  # redeliveries waiting for their backoff
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._local = threading.local()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        # Tests set this to lose notifications on purpose (a notification that was never sent):
        # a message it returns True for is acknowledged without being delivered.
        self.suppress: Callable[[Any], bool] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, name="push-bridge", daemon=True)]
        self._threads[0].start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def idle(self) -> bool:
        """True when nothing is in flight or waiting for a redelivery."""
        with self._lock:
            return self._in_flight == 0 and not self._due

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.min_backoff * 2 ** (attempt - 1))

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        idle_sleep = 0.005
        while not self._stop.is_set():
            held = self._next_due()
            if held is None:
                free = self._free_slots()
                if free == 0:
                    time.sleep(0.002)
                    continue
                try:
                    response = self.subscriber.pull(
                        request={
                            "subscription": self.subscription,
                            "max_messages": free,
                            "return_immediately": True,  # pstest otherwise waits 500 ms
                        },
                        timeout=10,
                    )
                except Exception as exc:  # the emulator going away ends the loop quietly
                    if self._stop.is_set():
                        return
                    log.warning("pull failed: %s", exc)
                    time.sleep(0.2)
                    continue
                if not response.received_messages:
                    time.sleep(idle_sleep)
                    idle_sleep = min(0.05, idle_sleep * 2)
                    continue
                idle_sleep = 0.005
                for received in response.received_messages:
                    self._dispatch(_Held(received.ack_id, received.message))
            else:
                self._dispatch(held)

    def _free_slots(self) -> int:
        with self._lock:
            return self.concurrency - self._in_flight

    def _next_due(self) -> _Held | None:
        with self._lock:
            if (
                self._due
                and self._due[0][0] <= time.monotonic()
                and self._in_flight < self.concurrency
            ):
                return heapq.heappop(self._due)[2]
        return None

    def _dispatch(self, held: _Held) -> None:
        with self._lock:
            self._in_flight += 1
        threading.Thread(target=self._deliver, args=(held,), daemon=True).start()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        try:
            resp = self._session().post(self.endpoint, data=body, headers=headers, timeout=timeout)
        except requests.RequestException:
            return 0  # no answer
        return resp.status_code

    def _deliver(self, held: _Held) -> None:
        try:
            if self.suppress is not None and self.suppress(held.message):
                self._ack(held)
                with self._lock:
                    self.stats.suppressed.add(held.message.message_id)
                return
            held.attempt += 1
            envelope = push_envelope(held.message, self.subscription, held.attempt)
            status = self.transport(
                json.dumps(envelope).encode(),
                {"Content-Type": "application/json", "User-Agent": "APIs-Google"},
                self.timeout,
            )
            msg_id = held.message.message_id
            with self._lock:
                self.stats.attempts.append(Attempt(msg_id, held.attempt, status, time.time()))
            if 200 <= status < 300:
                self._ack(held)
                with self._lock:
                    self.stats.acked.add(msg_id)
            elif held.attempt >= self.max_attempts:
                self._dead_letter(held)
            else:
                due = time.monotonic() + self.backoff(held.attempt)
                with self._lock:
                    heapq.heappush(self._due, (due, next(self._seq), held))
        except Exception:
            log.exception("push bridge failed to handle a message; it will be redelivered")
        finally:
            with self._lock:
                self._in_flight -= 1

    def _ack(self, held: _Held) -> None:
        self.subscriber.acknowledge(
            request={"subscription": self.subscription, "ack_ids": [held.ack_id]}
        )

    def _dead_letter(self, held: _Held) -> None:
        # The attributes Pub/Sub itself adds when it forwards a message to a dead-letter topic.
        attributes = dict(held.message.attributes)
        attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = str(held.attempt)
        attributes["CloudPubSubDeadLetterSourceSubscription"] = self.subscription.rsplit("/", 1)[-1]
        attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] = self.subscription.split("/")[
            1
        ]
        self.publisher.publish(self.dead_letter_topic, held.message.data, **attributes).result(30)
        self._ack(held)
        with self._lock:
            self.stats.dead_lettered.add(held.message.message_id)
