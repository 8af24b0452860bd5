"""Fuzzing the event handler over HTTP: Pub/Sub push envelopes, Storage notifications and
CloudEvents (binary and structured mode), each valid, subtly invalid (one mutation of a valid
one) or random.

Expectations: never a 5xx; a valid delivery is acknowledged and not rejected; a subtly invalid one
is acknowledged as `rejected`; and every delivery is in the event log: the rows of deliveries whose
id survives parsing are matched by id, and the number of `rejected` rows logged during the run is
at least the number of `rejected` answers.

Object names use a workflow the registry does not know (`fuzz-<tag>`) or fall outside the layout,
so fuzzing never announces, claims or writes anything. Request ids are placeholders replaced by a
unique id per request (`fuzz-<tag>-<n>`), so no two requests share a delivery id.
"""

from __future__ import annotations

import base64
import json
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

ID = "@FUZZ-ID@"
STORAGE_TYPES = (
    "google.cloud.storage.object.v1.finalized",
    "google.cloud.storage.object.v1.metadataUpdated",
    "google.cloud.storage.object.v1.deleted",
    "google.cloud.storage.object.v1.archived",
)
EVENT_TYPES = ("OBJECT_FINALIZE", "OBJECT_METADATA_UPDATE", "OBJECT_DELETE", "OBJECT_ARCHIVE")
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
HEADER_TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + "-_./:;=,+", min_size=0, max_size=30
)
Mutation = Callable[[dict[str, Any]], None]


@dataclass
class Example:
    """One HTTP request and what it must produce."""

    kind: str  # valid | invalid | random
    form: str  # push | structured | binary | messagePublished-... | random
    body: Any  # a JSON value (serialised at send time) or bytes
    headers: dict[str, str]
    mutation: str = ""
    id_kept: bool = True  # the unique id sits where the handler salvages it for the log row

    def render(self, unique: str) -> tuple[bytes, dict[str, str]]:
        raw = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        headers = {k: v.replace(ID, unique) for k, v in self.headers.items()}
        return raw.replace(ID.encode(), unique.encode()), headers


# -- valid building blocks ------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def object_names(tag: str) -> st.SearchStrategy[str]:
    """Names in the layout (of a workflow nobody registered) and names outside it."""
    segment = st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
        min_size=1,
        max_size=12,
    )
    in_layout = st.builds(
        lambda v, r, p: f"fuzz-{tag}/{v}/{r}/{p}",
        st.sampled_from(["1.0.0", "2.1", "v 3"]),
        segment,
        st.lists(segment, min_size=1, max_size=3).map("/".join),
    )
    outside = st.lists(segment, min_size=1, max_size=2).map(lambda s: f"fuzz-{tag}-" + "/".join(s))
    return st.one_of(in_layout, outside)


@st.composite
def resources(draw: st.DrawFn, tag: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "bucket": draw(st.sampled_from(["tally-outputs", "other-bucket"])),
        "name": draw(object_names(tag)),
        "generation": str(draw(st.integers(1, 2**62))),
    }
    optional = {
        "metageneration": st.integers(1, 99).map(str),
        "size": st.integers(0, 2**40).map(str),
        "contentType": st.sampled_from(["text/plain", "application/json"]),
        "md5Hash": st.just("xMpCOKC5I4INzFCab3WEmw=="),
        "crc32c": st.just("kPWZ4w=="),
        "timeCreated": st.just("2026-11-25T12:35:27.182704Z"),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            resource[key] = draw(strategy)
    return resource


def _attributes(resource: dict[str, Any], event_type: str, payload: str) -> dict[str, str]:
    return {
        "bucketId": resource["bucket"],
        "objectId": resource["name"],
        "objectGeneration": resource["generation"],
        "eventType": event_type,
        "eventTime": "2026-11-25T12:35:27Z",
        "payloadFormat": payload,
    }


@st.composite
def pubsub_messages(draw: st.DrawFn, tag: str) -> dict[str, Any]:
    resource = draw(resources(tag))
    payload = draw(st.sampled_from(["JSON_API_V1", "NONE"]))
    message: dict[str, Any] = {
        "attributes": _attributes(resource, draw(st.sampled_from(EVENT_TYPES)), payload),
        "messageId": ID,
        "message_id": ID,
        "publishTime": _now(),
    }
    if payload == "JSON_API_V1":
        message["data"] = base64.b64encode(json.dumps(resource).encode()).decode()
    return message


@st.composite
def push_envelopes(draw: st.DrawFn, tag: str) -> Example:
    envelope = {
        "message": draw(pubsub_messages(tag)),
        "subscription": "projects/tally-local/subscriptions/fuzz",
        "deliveryAttempt": draw(st.integers(1, 5)),
    }
    headers = {"Content-Type": "application/json", "User-Agent": "APIs-Google"}
    return Example("valid", "push", envelope, headers)


@st.composite
def structured_events(draw: st.DrawFn, tag: str) -> Example:
    published = draw(st.booleans())
    event: dict[str, Any] = {"specversion": "1.0", "id": ID, "source": "//fuzz"}
    if published:
        event["type"] = MESSAGE_PUBLISHED
        event["data"] = {"message": draw(pubsub_messages(tag)), "subscription": "fuzz"}
    else:
        event["type"] = draw(st.sampled_from(STORAGE_TYPES))
        event["data"] = draw(resources(tag))
    if draw(st.booleans()):
        event["time"] = _now()
    event["datacontenttype"] = "application/json"
    form = "structured-messagePublished" if published else "structured-storage"
    return Example("valid", form, event, {"Content-Type": "application/cloudevents+json"})


@st.composite
def binary_events(draw: st.DrawFn, tag: str) -> Example:
    published = draw(st.booleans())
    headers = {
        "ce-specversion": "1.0",
        "ce-id": ID,
        "ce-source": "//fuzz",
        "Content-Type": "application/json",
    }
    if published:
        headers["ce-type"] = MESSAGE_PUBLISHED
        data: dict[str, Any] = {"message": draw(pubsub_messages(tag)), "subscription": "fuzz"}
    else:
        headers["ce-type"] = draw(st.sampled_from(STORAGE_TYPES))
        data = draw(resources(tag))
    if draw(st.booleans()):
        headers["ce-time"] = _now()
    form = "binary-messagePublished" if published else "binary-storage"
    return Example("valid", form, data, headers)


def valid_examples(tag: str) -> st.SearchStrategy[Example]:
    return st.one_of(push_envelopes(tag), structured_events(tag), binary_events(tag))


# -- subtle mutations: each makes a valid delivery malformed ------------------------------------
def _message(example: Example) -> dict[str, Any] | None:
    body = example.body
    if example.form == "push":
        return body["message"]
    if example.form == "structured-messagePublished":
        return body["data"]["message"]
    if example.form == "binary-messagePublished":
        return body["message"]
    return None


def _resource(example: Example) -> dict[str, Any] | None:
    if example.form == "structured-storage":
        return example.body["data"]
    if example.form == "binary-storage":
        return example.body
    message = _message(example)
    if message is not None and "data" in message:
        return json.loads(base64.b64decode(message["data"]))
    return None


def _set_resource(example: Example, resource: Any) -> None:
    if example.form == "structured-storage":
        example.body["data"] = resource
    elif example.form == "binary-storage":
        example.body = resource
    else:
        message = _message(example)
        assert message is not None
        message["attributes"]["payloadFormat"] = "JSON_API_V1"
        message["data"] = base64.b64encode(json.dumps(resource).encode()).decode()


def _attrs(example: Example) -> dict[str, Any]:
    message = _message(example)
    assert message is not None
    return message["attributes"]


def message_mutations() -> dict[str, Callable[[Example], bool]]:
    """Mutations of a Pub/Sub message; each returns whether the id is still salvageable."""

    def attribute(name: str, value: Any) -> Callable[[Example], bool]:
        def mutate(example: Example) -> bool:
            _attrs(example)[name] = value
            return True

        return mutate

    def no_attribute(name: str) -> Callable[[Example], bool]:
        def mutate(example: Example) -> bool:
            _attrs(example).pop(name, None)
            return True

        return mutate

    def data(raw: bytes) -> Callable[[Example], bool]:
        def mutate(example: Example) -> bool:
            message = _message(example)
            assert message is not None
            message["attributes"]["payloadFormat"] = "JSON_API_V1"
            message["data"] = base64.b64encode(raw).decode()
            return True

        return mutate

    def field(name: str, value: Any, kept: bool = True) -> Callable[[Example], bool]:
        def mutate(example: Example) -> bool:
            message = _message(example)
            assert message is not None
            if value is None:
                message.pop(name, None)
            else:
                message[name] = value
            return kept

        return mutate

    def no_message_id(example: Example) -> bool:
        message = _message(example)
        assert message is not None
        message.pop("messageId", None)
        message.pop("message_id", None)
        return False

    def message_id_number(example: Example) -> bool:
        message = _message(example)
        assert message is not None
        message["messageId"] = 12345
        return False

    return {
        "event type unknown": attribute("eventType", "OBJECT_EXPLODED"),
        "event type missing": no_attribute("eventType"),
        "attribute not a string": attribute("objectGeneration", 7),
        "generation not a number": attribute("objectGeneration", "seven"),
        "generation beyond INT64": attribute("objectGeneration", "9999999999999999999"),
        "payload format unknown": attribute("payloadFormat", "PROTOBUF_V2"),
        "event time not a time": attribute("eventTime", "2026-13-45T99:00:00Z"),
        "unknown request": attribute("tally-request", "explode"),
        "object name too long": attribute("objectId", "n" * 1100),
        "lone surrogate in a name": attribute("objectId", "fuzz-\ud800/1/r/a"),
        "data not base64": field("data", "!!!not base64!!!"),
        "data not JSON": data(b"<xml/>"),
        "data a JSON array": data(b"[1, 2]"),
        "data not UTF-8": data(b'{"name": "\xff\xfe"}'),
        "publish time not a time": field("publishTime", "next tuesday"),
        "attributes a list": field("attributes", ["bucketId", "x"]),
        "message id missing": no_message_id,
        "message id a number": message_id_number,
    }


def resource_mutations(form: str) -> dict[str, Callable[[Example], bool]]:
    def change(key: str, value: Any) -> Callable[[Example], bool]:
        def mutate(example: Example) -> bool:
            resource = _resource(example)
            message = _message(example)
            if resource is None:  # payload NONE: give it a resource first
                assert message is not None
                resource = {
                    "bucket": message["attributes"]["bucketId"],
                    "name": message["attributes"]["objectId"],
                    "generation": message["attributes"]["objectGeneration"],
                }
            if value is None:
                resource.pop(key, None)
                if message is not None:  # the attribute would stand in for the field
                    message["attributes"].pop({"name": "objectId"}.get(key, key), None)
            else:
                resource[key] = value
            _set_resource(example, resource)
            return True

        return mutate

    found = {
        "resource generation negative": change("generation", -5),
        "resource size not a number": change("size", "12 bytes"),
        "resource bucket not a string": change("bucket", ["b"]),
        "resource name missing": change("name", None),
        "resource time created not a time": change("timeCreated", "noon"),
        "resource not an object": lambda e: (_set_resource(e, [1, 2]), True)[1],
    }
    if form.endswith("storage"):
        found["resource generation not a number"] = change("generation", "seven")
    else:  # the attribute objectGeneration is at least 1
        found["resource generation differs from its attribute"] = change("generation", "0")
    return found


def cloudevent_mutations() -> dict[str, Callable[[Example], bool]]:
    def header(name: str, value: str | None, kept: bool = True) -> Callable[[Example], bool]:
        def mutate(example: Example) -> bool:
            if example.form.startswith("binary"):
                if value is None:
                    example.headers.pop(name, None)
                else:
                    example.headers[name] = value
            else:
                key = name.removeprefix("ce-")
                if value is None:
                    example.body.pop(key, None)
                else:
                    example.body[key] = value
            return kept

        return mutate

    def data_text(example: Example) -> bool:
        if example.form.startswith("binary"):
            example.body = b"not json"
        else:
            example.body["data"] = "not an object"
        return True

    return {
        "CloudEvent id missing": header("ce-id", None, kept=False),
        "CloudEvent source missing": header("ce-source", None),
        "CloudEvent specversion unknown": header("ce-specversion", "0.9"),
        "CloudEvent type not handled": header("ce-type", "com.example.other"),
        "CloudEvent time not a time": header("ce-time", "yesterday"),
        "CloudEvent data not an object": data_text,
    }


def _applicable(example: Example) -> dict[str, Callable[[Example], bool]]:
    found: dict[str, Callable[[Example], bool]] = {}
    if example.form != "push":
        found.update(cloudevent_mutations())
    if _message(example) is not None:
        found.update(message_mutations())
        if example.form != "push":  # a messagePublished CloudEvent's id stands in for it
            found.pop("message id missing")
    found.update(resource_mutations(example.form))
    if example.form == "push":
        found["envelope an array"] = lambda e: (setattr(e, "body", [e.body]), False)[1]
        found["message a string"] = lambda e: (e.body.update(message="hi"), False)[1]
        found["delivery attempt negative"] = lambda e: (e.body.update(deliveryAttempt=-1), True)[1]
        found["body over 1 MiB"] = lambda e: (e.body.update(padding="p" * (1 << 20)), True)[1]
    return found


@st.composite
def invalid_examples(draw: st.DrawFn, tag: str) -> Example:
    example = draw(valid_examples(tag))
    mutations = _applicable(example)
    name = draw(st.sampled_from(sorted(mutations)))
    example.id_kept = mutations[name](example)
    example.kind, example.mutation = "invalid", name
    return example


# -- random ---------------------------------------------------------------------------------------
KEYS = (
    "message",
    "data",
    "attributes",
    "messageId",
    "publishTime",
    "subscription",
    "deliveryAttempt",
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "bucket",
    "name",
    "generation",
    "x",
)


def json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
        ),
        max_leaves=15,
    )


@st.composite
def random_examples(draw: st.DrawFn) -> Example:
    body: Any = draw(st.one_of(st.binary(max_size=400), json_values()))
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/cloudevents+json",
                "application/cloudevents-batch+json",
                "text/plain",
                "",
            ]
        )
    )
    headers = {"Content-Type": content_type} if content_type else {}
    if draw(st.booleans()):
        for name in ("ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time"):
            if draw(st.booleans()):
                headers[name] = draw(HEADER_TEXT)
    return Example("random", "random", body, headers, id_kept=False)


def examples(tag: str) -> st.SearchStrategy[Example]:
    return st.one_of(valid_examples(tag), invalid_examples(tag), random_examples())


# -- the run --------------------------------------------------------------------------------------
@dataclass
class FuzzReport:
    examples: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    rejected: int = 0
    rejected_rows: int = 0
    expected_ids: dict[str, str] = field(default_factory=dict)  # unique id -> expected outcome
    missing_ids: list[str] = field(default_factory=list)
    wrong_outcome_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing_ids and self.rejected_rows >= self.rejected


class Fuzzer:
    def __init__(self, handler_url: str, tag: str) -> None:
        self.url = handler_url
        self.tag = tag
        self.report = FuzzReport()
        self._count = 0
        self._lock = threading.Lock()
        self._session = requests.Session()

    def post(self, example: Example) -> None:
        with self._lock:
            self._count += 1
            unique = f"fuzz-{self.tag}-{self._count}"
        body, headers = example.render(unique)
        resp = self._session.post(self.url, data=body, headers=headers, timeout=60)
        report = self.report
        report.examples += 1
        report.by_kind[example.kind] += 1
        report.statuses[resp.status_code] += 1
        outcome = resp.json().get("outcome", "?") if resp.status_code < 500 else "5xx"
        report.outcomes[outcome] += 1
        report.rejected += outcome == "rejected"
        what = (
            f"{example.kind}/{example.form}/{example.mutation or '-'}: {resp.status_code} {outcome}"
        )
        assert resp.status_code < 500, f"{what} {resp.text[:300]} for {body[:300]!r} {headers}"
        if example.kind == "valid":
            assert resp.status_code == 200 and outcome != "rejected", f"{what} {resp.text[:300]}"
            report.expected_ids[unique] = outcome
        elif example.kind == "invalid":
            assert outcome == "rejected", f"{what} {resp.text[:300]}"
            if example.id_kept:
                report.expected_ids[unique] = outcome


def rejected_rows_since(stack: Any, since: str) -> int:
    rows = stack.query(
        "SELECT COUNT(*) AS n FROM `${dataset}.events`"
        f" WHERE outcome = 'rejected' AND received_time >= TIMESTAMP('{since}')"
    )
    return int(rows[0]["n"])


def logged_outcomes(stack: Any, tag: str) -> dict[str, str]:
    rows = stack.query(
        "SELECT delivery_id, outcome FROM `${dataset}.events`"
        f" WHERE delivery_id LIKE 'fuzz-{tag}-%'"
    )
    return {r["delivery_id"]: r["outcome"] for r in rows}


def verify_log(stack: Any, fuzzer: Fuzzer, since: str, timeout: float = 60.0) -> None:
    """Every delivery whose id survived is logged with its outcome; rejected rows >= answers."""
    report = fuzzer.report
    deadline = time.monotonic() + timeout
    while True:
        logged = logged_outcomes(stack, fuzzer.tag)
        report.rejected_rows = rejected_rows_since(stack, since)
        report.missing_ids = sorted(set(report.expected_ids) - set(logged))
        if (not report.missing_ids and report.rejected_rows >= report.rejected) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    report.wrong_outcome_ids = sorted(
        i for i, outcome in report.expected_ids.items() if i in logged and logged[i] != outcome
    )
    if report.wrong_outcome_ids:
        report.problems.append(f"logged with another outcome: {report.wrong_outcome_ids[:10]}")
    if report.rejected_rows < report.rejected:
        report.problems.append(
            f"{report.rejected} rejected answers but {report.rejected_rows} rejected rows"
        )


def run_fuzz(
    stack: Any, max_examples: int, seed: int | None, tag: str, derandomize: bool = False
) -> FuzzReport:
    """Run the property with hypothesis; a failing example is shrunk and recorded."""
    fuzzer = Fuzzer(stack.handler_url, tag)
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    started = time.monotonic()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(example=examples(tag))
    def property_(example: Example) -> None:
        fuzzer.post(example)

    test = property_ if derandomize or seed is None else hypothesis_seed(seed)(property_)
    try:
        test()
    except Exception as exc:
        fuzzer.report.problems.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    verify_log(stack, fuzzer, since)  # polls the event log until every row is there (deadline)
    fuzzer.report.seconds = time.monotonic() - started
    return fuzzer.report
