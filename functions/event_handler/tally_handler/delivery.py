"""An HTTP request (body + headers) -> a ``Delivery``, or ``MalformedDelivery`` saying what to fix.

Accepted inputs:

- a Pub/Sub push envelope ``{"message": {...}, "subscription": ..., "deliveryAttempt": n}`` whose
  message is a Cloud Storage notification (payload format ``JSON_API_V1`` or ``NONE``) or a tally
  request (attribute ``tally-request=reconcile``);
- a CloudEvent, binary or structured mode: ``google.cloud.pubsub.topic.v1.messagePublished`` (data =
  the push envelope's message) or ``google.cloud.storage.object.v1.*`` (data = the object resource).

Parsing never raises anything but ``MalformedDelivery``: malformed input must be logged as rejected
and acknowledged, never turned into a 500 and a redelivery loop. Everything kept from the input is
validated so that it can go into BigQuery as is (strings valid UTF-8, integers within INT64,
timestamps normalised to RFC 3339 UTC).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NoReturn

__all__ = [
    "JSON_API_V1",
    "MAX_BODY_BYTES",
    "MAX_INT64",
    "MAX_OBJECT_NAME_BYTES",
    "MAX_TEXT_BYTES",
    "MESSAGE_PUBLISHED",
    "PAYLOAD_NONE",
    "REPLAYED_ATTRIBUTE",
    "REQUEST_ATTRIBUTE",
    "STORAGE_CLOUDEVENT_TYPES",
    "Delivery",
    "EventType",
    "MalformedDelivery",
    "Notification",
    "Reconcile",
    "Request",
    "Source",
    "parse_delivery",
    "rfc3339",
]

MAX_BODY_BYTES = 1 << 20  # Storage notifications are ~2 KiB; anything near this is not one.
MAX_OBJECT_NAME_BYTES = 1024  # Cloud Storage's limit.
MAX_TEXT_BYTES = 1024  # ids, hashes, content types: keeps a log row small.
MAX_INT64 = (1 << 63) - 1  # BigQuery INTEGER.

JSON_API_V1 = "JSON_API_V1"
PAYLOAD_NONE = "NONE"
REPLAYED_ATTRIBUTE = "tally-replayed"
REQUEST_ATTRIBUTE = "tally-request"
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"

_HOW_TO_NOTIFY = "create the bucket notification with payload format JSON_API_V1"


# Source and Request share their shape with manifest.State/ClaimStatus (duplicates D21): small
# StrEnums of unrelated values, one per concept by design.
class Source(StrEnum):
    PUBSUB_PUSH = "pubsub-push"
    CLOUDEVENT = "cloudevent"


class Request(StrEnum):
    NOTIFICATION = "notification"
    RECONCILE = "reconcile"


class EventType(StrEnum):
    OBJECT_FINALIZE = "OBJECT_FINALIZE"
    OBJECT_METADATA_UPDATE = "OBJECT_METADATA_UPDATE"
    OBJECT_DELETE = "OBJECT_DELETE"
    OBJECT_ARCHIVE = "OBJECT_ARCHIVE"


_EVENT_TYPES = frozenset(EventType)

STORAGE_CLOUDEVENT_TYPES: Mapping[str, EventType] = MappingProxyType(
    {
        "google.cloud.storage.object.v1.finalized": EventType.OBJECT_FINALIZE,
        "google.cloud.storage.object.v1.metadataUpdated": EventType.OBJECT_METADATA_UPDATE,
        "google.cloud.storage.object.v1.deleted": EventType.OBJECT_DELETE,
        "google.cloud.storage.object.v1.archived": EventType.OBJECT_ARCHIVE,
    }
)


@dataclass(frozen=True, slots=True)
class Notification:
    """One Cloud Storage event about one object generation."""

    bucket: str
    name: str  # the full object name (the ``object`` column)
    generation: int
    event_type: EventType
    metageneration: int | None = None
    # size to time_created: the object metadata completeness.Entry also holds, as an event gives it
    # (Entry: as a listing does); the two stay apart, each parsed from its own payload.
    size: int | None = None
    crc32c: str | None = None
    md5: str | None = None
    content_type: str | None = None
    event_time: str | None = None
    time_created: str | None = None
    overwritten_generation: int | None = None  # attribute overwroteGeneration
    overwritten_by_generation: int | None = None  # on the delete that an overwrite causes


@dataclass(frozen=True, slots=True)
class Reconcile:
    """A reconcile request: examine runs under ``prefix`` (or of one ``workflow`` ``version``, as
    the registry asks when it registers one, or every run with ``every_run``), resuming at listing
    ``page_token``; with none of these, the runs that may be open (tally's open-run index)."""

    prefix: str | None = None
    page_token: str | None = None
    workflow: str | None = None
    version: str | None = None
    every_run: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    source: Source
    delivery_id: str
    delivery_attempt: int | None = None
    last_attempt: bool = False
    publish_time: str | None = None
    subscription: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    replayed: bool = False
    notification: Notification | None = None
    reconcile: Reconcile | None = None

    @property
    def request(self) -> Request:
        return Request.RECONCILE if self.reconcile is not None else Request.NOTIFICATION


class MalformedDelivery(Exception):
    """The request cannot be a delivery tally handles; ``reason`` says what to fix.

    Carries whatever was validated before the problem was found, so the rejected row still has the
    delivery id and attempt. ``internal`` is true when the cause is a bug in this parser rather
    than the input (the unit tests' fuzzing asserts it never is).
    """

    def __init__(
        self,
        reason: str,
        delivery_id: str | None = None,
        *,
        source: Source = Source.PUBSUB_PUSH,
        delivery_attempt: int | None = None,
        last_attempt: bool = False,
        publish_time: str | None = None,
        subscription: str | None = None,
        body_sha256: str = "",
        internal: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delivery_id = delivery_id
        self.source = source
        self.delivery_attempt = delivery_attempt
        self.last_attempt = last_attempt
        self.publish_time = publish_time
        self.subscription = subscription
        self.body_sha256 = body_sha256
        self.internal = internal

    @property
    def delivery(self) -> Delivery:
        """The salvaged delivery, for the rejected row. Without a delivery id, a stable one is
        derived from the body, so every attempt of one bad message logs the same id."""
        delivery_id = self.delivery_id or f"unparsed-{self.body_sha256[:32]}"
        return Delivery(
            source=self.source,
            delivery_id=delivery_id,
            delivery_attempt=self.delivery_attempt,
            last_attempt=self.last_attempt,
            publish_time=self.publish_time,
            subscription=self.subscription,
        )


def parse_delivery(body: bytes, headers: Mapping[str, str], max_delivery_attempts: int) -> Delivery:
    """Parse one HTTP request into a ``Delivery``; raises only ``MalformedDelivery``."""
    parser = _Parser(bytes(body), max_delivery_attempts)
    try:
        return parser.parse({str(k).lower(): str(v) for k, v in headers.items()})
    except MalformedDelivery:
        raise
    except Exception as error:  # a parser bug must still end as a logged, acknowledged rejection
        parser.fail(
            f"the handler could not parse this delivery ({type(error).__name__}: {error}); "
            "this is a bug in tally: report it with the delivery id",
            internal=True,
        )


def rfc3339(value: datetime | str) -> str:
    """A timestamp as RFC 3339 UTC with microseconds, the form BigQuery and the manifest use."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; pass an aware datetime (UTC)")
        moment = value
    else:
        moment = _parse_time(value)
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds") + "Z"


_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def _parse_time(text: str) -> datetime:
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{_show(text)} is not an RFC 3339 timestamp like 2026-11-25T11:56:29Z")
    year, month, day, hour, minute, second, fraction, zulu, sign, tz_h, tz_m = match.groups()
    offset = timedelta(0)
    if not zulu:
        offset = timedelta(hours=int(tz_h), minutes=int(tz_m))
        offset = -offset if sign == "-" else offset
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(offset),
        )
        moment.astimezone(UTC)  # out of range once in UTC (year 1 with a + offset)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"{_show(text)} is not a valid timestamp: {error}") from None
    return moment


_MESSAGE_ID = re.compile(rb'"message_?[iI]d"\s*:\s*"([0-9A-Za-z_.:-]{1,256})"')


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw(data: Any) -> Any:
    return data


class _Parser:
    """One parse: validated fields are kept as they are found, for the rejection's salvage."""

    def __init__(self, body: bytes, max_delivery_attempts: int) -> None:
        self.body = body
        self.max_delivery_attempts = max_delivery_attempts
        self.source = Source.PUBSUB_PUSH
        self.delivery_id: str | None = None
        self.delivery_attempt: int | None = None
        self.publish_time: str | None = None
        self.subscription: str | None = None

    # -- failure and salvage -------------------------------------------------------------------

    def fail(self, reason: str, *, internal: bool = False) -> NoReturn:
        raise MalformedDelivery(
            reason,
            self.delivery_id,
            source=self.source,
            delivery_attempt=self.delivery_attempt,
            last_attempt=self._last_attempt(),
            publish_time=self.publish_time,
            subscription=self.subscription,
            body_sha256=hashlib.sha256(self.body).hexdigest(),
            internal=internal,
        )

    def _last_attempt(self) -> bool:
        attempt = self.delivery_attempt
        return attempt is not None and attempt >= self.max_delivery_attempts

    # -- typed field readers: each names the field and the fix when it fails --------------------

    def text(
        self, value: Any, what: str, *, required: bool = False, max_bytes: int = MAX_TEXT_BYTES
    ) -> str | None:
        if value is None or (value == "" and not required):
            if required:
                self.fail(f"{what} is missing")
            return None
        if not isinstance(value, str):
            self.fail(f"{what} must be a string, not {_kind(value)} {_show(value)}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            self.fail(f"{what} is not valid Unicode (it holds a lone surrogate): {_show(value)}")
        if size > max_bytes:
            self.fail(f"{what} is {size} bytes long; the limit is {max_bytes}")
        return value

    def integer(self, value: Any, what: str) -> int | None:
        if value is None or value == "":
            return None
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value, re.ASCII):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            self.fail(f"{what} must be a non-negative integer, not {_show(value)}")
        if not 0 <= number <= MAX_INT64:
            self.fail(f"{what} {number} is out of range (0 to {MAX_INT64})")
        return number

    def time(self, value: Any, what: str) -> str | None:
        text = self.text(value, what)
        if text is None:
            return None
        try:
            return rfc3339(text)
        except ValueError as error:
            self.fail(f"{what}: {error}")

    def json(self, data: bytes | str, what: str, hint: str = "") -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            detail = f"{type(error).__name__}: {_show(str(error), 160)}"
            self.fail(f"{what} is not JSON ({detail}){'; ' + hint if hint else ''}")

    def object(self, value: Any, what: str, hint: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{what} is {_kind(value)}, not a JSON object; {hint}")
        return value

    # -- entry point ------------------------------------------------------------------------------

    def parse(self, headers: dict[str, str]) -> Delivery:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        binary_cloudevent = "ce-specversion" in headers
        if binary_cloudevent or content_type.startswith("application/cloudevents"):
            self.source = Source.CLOUDEVENT
            self.delivery_id = self._salvaged_text(headers.get("ce-id"))
        if len(self.body) > MAX_BODY_BYTES:
            self.delivery_id = self.delivery_id or self._scavenged_message_id()
            self.fail(
                f"the request body is {len(self.body)} bytes; the limit is {MAX_BODY_BYTES} "
                "(a Storage notification is about 2 KiB): send only Storage notifications here"
            )
        if content_type == "application/cloudevents-batch+json":
            self.fail("CloudEvents batch mode is not supported; send one event per request")
        if binary_cloudevent:
            return self._cloudevent(headers, document=None)
        if not self.body:
            self.fail("the request body is empty; send a Pub/Sub push envelope or a CloudEvent")
        document = self.json(
            self.body, "the request body", "send a Pub/Sub push envelope or a CloudEvent as JSON"
        )
        structured = isinstance(document, dict) and "specversion" in document
        if content_type == "application/cloudevents+json" or (
            structured and "message" not in document
        ):
            self.source = Source.CLOUDEVENT
            return self._cloudevent(headers, document=document)
        return self._push(document)

    def _scavenged_message_id(self) -> str | None:
        """The message id of a body too large to parse, so its rejection still names it."""
        found = _MESSAGE_ID.search(self.body)
        return self._salvaged_text(found.group(1).decode("utf-8", "replace")) if found else None

    def _salvaged_text(self, value: Any) -> str | None:
        try:
            return self.text(value, "delivery id")
        except MalformedDelivery:
            return None

    # -- Pub/Sub push -----------------------------------------------------------------------------

    def _push(self, envelope: Any) -> Delivery:
        return self._envelope(
            envelope,
            ("the request body", 'the envelope\'s "message"'),
            'send a Pub/Sub push envelope {"message": {...}, "subscription": "..."}',
            fallback_id=None,
            fallback_time=None,
        )

    def _envelope(
        self,
        envelope: Any,
        names: tuple[str, str],
        hint: str,
        *,
        fallback_id: str | None,
        fallback_time: str | None,
    ) -> Delivery:
        """A Pub/Sub envelope (a push body or messagePublished data) -> Delivery.

        ``names`` are the envelope's and its message's in errors; ``hint`` says what to send.
        """
        envelope = self.object(envelope, names[0], hint)
        message = self.object(envelope.get("message"), names[1], hint)
        subscription = envelope.get("subscription")
        attempt = envelope.get("deliveryAttempt", message.get("deliveryAttempt"))
        message_id = message.get("messageId", message.get("message_id"))
        if message_id is None and fallback_id is None:
            self.fail(
                "message.messageId is missing; a Pub/Sub message always has one: "
                "send only Pub/Sub push deliveries or CloudEvents here"
            )
        self.delivery_id = (
            self.text(message_id, "message.messageId", required=True)
            if message_id is not None
            else fallback_id
        )
        self.delivery_attempt = self.integer(attempt, "deliveryAttempt")
        publish_time = message.get("publishTime", message.get("publish_time"))
        self.publish_time = self.time(publish_time, "message.publishTime") or fallback_time
        self.subscription = self.text(subscription, "subscription")

        attributes = self._attributes(message.get("attributes"))
        data = self._data(message.get("data"))
        request = attributes.get(REQUEST_ATTRIBUTE)
        reconcile = None
        notification = None
        if request is not None:
            if request != Request.RECONCILE:
                self.fail(
                    f"attribute {REQUEST_ATTRIBUTE}={_show(request)} is not a request tally "
                    f"knows; the only one is {REQUEST_ATTRIBUTE}={Request.RECONCILE}"
                )
            reconcile = Reconcile(
                prefix=attributes.get("prefix") or None,
                page_token=attributes.get("page_token") or None,
                workflow=attributes.get("workflow") or None,
                version=attributes.get("version") or None,
                every_run=attributes.get("all") == "true",
            )
            if (reconcile.workflow is None) != (reconcile.version is None):
                self.fail(
                    "a reconcile request names a workflow version with both attributes "
                    "`workflow` and `version`, or neither"
                )
        else:
            notification = self._notification(attributes, data)
        return self._delivery(attributes, notification=notification, reconcile=reconcile)

    def _delivery(
        self,
        attributes: dict[str, str],
        *,
        notification: Notification | None,
        reconcile: Reconcile | None,
    ) -> Delivery:
        assert self.delivery_id is not None
        return Delivery(
            source=self.source,
            delivery_id=self.delivery_id,
            delivery_attempt=self.delivery_attempt,
            last_attempt=self._last_attempt(),
            publish_time=self.publish_time,
            subscription=self.subscription,
            attributes=attributes,
            replayed=attributes.get(REPLAYED_ATTRIBUTE) == "true",
            notification=notification,
            reconcile=reconcile,
        )

    def _attributes(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        hint = "Pub/Sub attributes are a map of strings to strings"
        attributes = self.object(value, "message.attributes", hint)
        for key, item in attributes.items():
            self.text(key, "an attribute name", required=True)
            if not isinstance(item, str):
                self.fail(f"attribute {_show(key)} must be a string, not {_kind(item)}; {hint}")
            self.text(item, f"attribute {_show(key)}")
        return dict(attributes)

    def _data(self, value: Any) -> bytes:
        if value is None or value == "":
            return b""
        if not isinstance(value, str):
            self.fail(f"message.data must be a base64 string, not {_kind(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            self.fail(f"message.data is not valid base64: {error}; {_HOW_TO_NOTIFY}")

    # -- Storage notifications --------------------------------------------------------------------

    def _notification(self, attributes: dict[str, str], data: bytes) -> Notification:
        payload_format = attributes.get("payloadFormat")
        if payload_format not in (None, JSON_API_V1, PAYLOAD_NONE):
            self.fail(f"payloadFormat {_show(payload_format)} is not supported; {_HOW_TO_NOTIFY}")
        resource: dict[str, Any] = {}
        if payload_format == JSON_API_V1 or (payload_format is None and data):
            if not data:
                self.fail(f"payloadFormat is {JSON_API_V1} but message.data is empty")
            resource = self.object(
                self.json(data, "message.data", _HOW_TO_NOTIFY),
                "message.data",
                f"with payload format {JSON_API_V1} it is the object resource",
            )
        if not resource and "bucketId" not in attributes and "objectId" not in attributes:
            self.fail(
                "the message is not a Storage notification (no bucketId/objectId attributes, "
                "no object resource); subscribe the handler only to the outputs bucket's "
                "notifications"
            )
        event_type = attributes.get("eventType")
        if event_type is None:
            self.fail("attribute eventType is missing; a Storage notification always has one")
        if event_type not in _EVENT_TYPES:
            self.fail(
                f"attribute eventType {_show(event_type)} is not a Storage event type "
                f"({', '.join(EventType)})"
            )
        return self._object_event(
            resource,
            event_type=EventType(event_type),
            event_time=self.time(attributes.get("eventTime"), "attribute eventTime"),
            attributes=attributes,
        )

    def _object_event(
        self,
        resource: dict[str, Any],
        *,
        event_type: EventType,
        event_time: str | None,
        attributes: Mapping[str, str],
    ) -> Notification:
        def pick(key: str, attribute: str, read: Callable[[Any, str], Any]) -> Any:
            from_data = read(resource.get(key), f"object resource field {key}")
            from_attributes = read(attributes.get(attribute), f"attribute {attribute}")
            if None not in (from_data, from_attributes) and from_data != from_attributes:
                self.fail(
                    f"the object resource says {key} {_show(from_data)} but attribute "
                    f"{attribute} says {_show(from_attributes)}: Storage did not send this message"
                )
            return from_data if from_data is not None else from_attributes

        def name(value: Any, what: str) -> str | None:
            return self.text(value, what, max_bytes=MAX_OBJECT_NAME_BYTES)

        bucket = pick("bucket", "bucketId", self.text)
        object_name = pick("name", "objectId", name)
        generation = pick("generation", "objectGeneration", self.integer)
        for value, what in ((bucket, "bucket"), (object_name, "object name")):
            if value is None:
                self.fail(f"the notification has no {what}; {_HOW_TO_NOTIFY}")
        if generation is None:
            self.fail(f"the notification has no object generation; {_HOW_TO_NOTIFY}")
        return Notification(
            bucket=bucket,
            name=object_name,
            generation=generation,
            event_type=event_type,
            metageneration=self.integer(resource.get("metageneration"), "metageneration"),
            size=self.integer(resource.get("size"), "size"),
            crc32c=self.text(resource.get("crc32c"), "crc32c"),
            md5=self.text(resource.get("md5Hash"), "md5Hash"),
            content_type=self.text(resource.get("contentType"), "contentType"),
            event_time=event_time,
            time_created=self.time(resource.get("timeCreated"), "timeCreated"),
            overwritten_generation=self.integer(
                attributes.get("overwroteGeneration"), "attribute overwroteGeneration"
            ),
            overwritten_by_generation=self.integer(
                attributes.get("overwrittenByGeneration"), "attribute overwrittenByGeneration"
            ),
        )

    # -- CloudEvents ------------------------------------------------------------------------------

    def _cloudevent(self, headers: dict[str, str], document: Any) -> Delivery:
        from cloudevents.http import from_http  # lazy: a small cold start for push deliveries

        if document is not None:
            self.object(document, "the structured CloudEvent", "send one event as a JSON object")
            self.delivery_id = self._salvaged_text(document.get("id"))
        try:
            event = from_http(headers, self.body, data_unmarshaller=_raw)
            attributes = dict(event.get_attributes())
            data = event.data
        except Exception as error:  # the library raises several unrelated types on bad input
            self.fail(
                f"not a valid CloudEvent ({type(error).__name__}: {_show(str(error), 160)}); "
                "send specversion, id, source and type (binary or structured mode)"
            )
        self.delivery_id = self.text(attributes.get("id"), "CloudEvent id", required=True)
        # The library invents "time" (now) when absent: only a sender-provided time is kept.
        provided_time = "ce-time" in headers if document is None else "time" in document
        event_time = self.time(attributes.get("time"), "CloudEvent time") if provided_time else None
        event_type = self.text(attributes.get("type"), "CloudEvent type", required=True)
        if isinstance(data, bytes | bytearray | str):
            data = self.json(data, "the CloudEvent data") if data else None
        if event_type == MESSAGE_PUBLISHED:
            return self._envelope(
                data,
                ("the CloudEvent data", "data.message"),
                'messagePublished data is {"message": {...}, "subscription": "..."}',
                fallback_id=self.delivery_id,
                fallback_time=event_time,
            )
        storage_event = STORAGE_CLOUDEVENT_TYPES.get(event_type)
        if storage_event is None:
            self.fail(
                f"CloudEvent type {_show(event_type)} is not handled; route only "
                f"{MESSAGE_PUBLISHED} or google.cloud.storage.object.v1.* events to the handler"
            )
        resource = self.object(
            data, "the CloudEvent data", "a Storage CloudEvent's data is the object resource"
        )
        notification = self._object_event(
            resource, event_type=storage_event, event_time=event_time, attributes={}
        )
        return self._delivery({}, notification=notification, reconcile=None)


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    if value is None:
        return "missing (or null)"
    return names.get(type(value), f"a {type(value).__name__}")
