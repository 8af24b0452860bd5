"""Parsing deliveries: real fixtures, a malformed corpus, and fuzzing (only MalformedDelivery)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tally_handler import delivery as parsing
from tally_handler.delivery import (
    MAX_BODY_BYTES,
    Delivery,
    EventType,
    MalformedDelivery,
    Request,
    Source,
    parse_delivery,
    rfc3339,
)
from tally_handler.outcomes import Outcome
from tally_handler.rows import event_row

EVENTS = Path(__file__).resolve().parent.parent / "events"
FIXTURES = sorted(p for p in EVENTS.glob("*.json") if p.name != "malformed.json")
MALFORMED = json.loads((EVENTS / "malformed.json").read_text(encoding="utf-8"))["cases"]
FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def body_of(case: dict[str, Any]) -> bytes:
    if case.get("huge"):
        data = base64.b64encode(b"x" * MAX_BODY_BYTES).decode()
        return json.dumps({"message": {"messageId": "23", "data": data}}).encode()
    if "nested_depth" in case:
        return b"[" * case["nested_depth"] + b"]" * case["nested_depth"]
    if "body_text" in case:
        return case["body_text"].encode("utf-8", "surrogatepass")
    if "body_base64" in case:
        return base64.b64decode(case["body_base64"])
    return json.dumps(case["body"]).encode()


def parse(case: dict[str, Any]) -> Delivery:
    headers = case.get("headers", {"content-type": "application/json"})
    return parse_delivery(body_of(case), headers, case.get("max_delivery_attempts", 5))


def as_plain(value: Any) -> Any:
    """A Delivery (or part of one) as JSON-like data, to compare with a fixture's ``expect``."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: as_plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {key: as_plain(item) for key, item in value.items()}
    return str(value) if isinstance(value, Source | EventType) else value


def assert_subset(expected: Any, actual: Any, where: str = "") -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, item in expected.items():
            assert key in actual, f"{where}.{key} is missing"
            assert_subset(item, actual[key], f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


# -- real events ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_parses_as_documented(path: Path) -> None:
    case = load(path)
    delivery = parse(case)
    actual = as_plain(delivery) | {"request": str(delivery.request)}
    assert_subset(case["expect"], actual, path.stem)


def test_fixtures_cover_the_documented_inputs() -> None:
    names = {path.stem for path in FIXTURES}
    assert {
        "push_finalize_emulator",
        "push_finalize_gcs",
        "push_payload_none",
        "push_metadata_update",
        "push_delete",
        "push_reconcile",
        "cloudevent_structured_message_published",
        "cloudevent_binary_storage_finalized",
    } <= names


def test_emulator_notification_keeps_odd_characters_of_the_name() -> None:
    delivery = parse(load(EVENTS / "push_finalize_emulator.json"))
    assert delivery.notification is not None
    assert delivery.notification.name == "wf/1.0.0/run 1/a#b?.txt"
    assert delivery.attributes["objectId"] == "wf/1.0.0/run 1/a#b?.txt"


def test_message_level_delivery_attempt_is_accepted() -> None:
    case = load(EVENTS / "push_finalize_emulator.json")
    case["body"]["message"]["deliveryAttempt"] = 2
    assert parse(case).delivery_attempt == 2


def test_snake_case_message_fields_are_accepted() -> None:
    case = load(EVENTS / "push_finalize_emulator.json")
    message = case["body"]["message"]
    message["message_id"] = message.pop("messageId")
    message["publish_time"] = message.pop("publishTime")
    delivery = parse(case)
    assert (delivery.delivery_id, delivery.publish_time) == ("7", "2026-11-25T11:56:29.301000Z")


@pytest.mark.parametrize(
    ("attempt", "maximum", "last"),
    [(None, 5, False), (1, 5, False), (4, 5, False), (5, 5, True), (7, 5, True), (1, 1, True)],
)
def test_last_attempt_is_flagged(attempt: int | None, maximum: int, last: bool) -> None:
    case = load(EVENTS / "push_finalize_emulator.json")
    if attempt is not None:
        case["body"]["deliveryAttempt"] = attempt
    case["max_delivery_attempts"] = maximum
    assert parse(case).last_attempt is last


def test_headers_are_case_insensitive() -> None:
    case = load(EVENTS / "cloudevent_binary_storage_finalized.json")
    case["headers"] = {key.upper(): value for key, value in case["headers"].items()}
    assert parse(case).delivery_id == "12829393831112610"


def test_structured_cloudevent_is_recognised_without_its_content_type() -> None:
    case = load(EVENTS / "cloudevent_structured_storage_deleted.json")
    case["headers"] = {"content-type": "application/json"}
    assert parse(case).source is Source.CLOUDEVENT


def test_binary_message_published_cloudevent() -> None:
    structured = load(EVENTS / "cloudevent_structured_message_published.json")["body"]
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "ce-77",
        "ce-source": structured["source"],
        "ce-type": structured["type"],
        "content-type": "application/json",
    }
    delivery = parse_delivery(json.dumps(structured["data"]).encode(), headers, 5)
    assert delivery.delivery_id == "12829393831112609"  # the message id, as in push
    assert delivery.notification is not None
    assert delivery.notification.event_time == "2024-11-25T12:16:29.205623Z"


def test_cloudevent_without_time_has_no_event_time() -> None:
    # the library fills in "now" for a missing time; it is not when the event happened
    case = load(EVENTS / "cloudevent_binary_storage_finalized.json")
    del case["headers"]["ce-time"]
    delivery = parse(case)
    assert delivery.notification is not None
    assert delivery.notification.event_time is None


@pytest.mark.parametrize(
    ("ce_type", "event_type"),
    [
        ("google.cloud.storage.object.v1.finalized", EventType.OBJECT_FINALIZE),
        ("google.cloud.storage.object.v1.metadataUpdated", EventType.OBJECT_METADATA_UPDATE),
        ("google.cloud.storage.object.v1.deleted", EventType.OBJECT_DELETE),
        ("google.cloud.storage.object.v1.archived", EventType.OBJECT_ARCHIVE),
    ],
)
def test_storage_cloudevent_types(ce_type: str, event_type: EventType) -> None:
    case = load(EVENTS / "cloudevent_binary_storage_finalized.json")
    case["headers"]["ce-type"] = ce_type
    notification = parse(case).notification
    assert notification is not None
    assert notification.event_type is event_type


def test_reconcile_request_carries_no_notification_and_any_data() -> None:
    case = load(EVENTS / "push_reconcile.json")
    case["body"]["message"]["data"] = base64.b64encode(b"\xff\x00 not json").decode()
    delivery = parse(case)
    assert delivery.request is Request.RECONCILE
    assert delivery.notification is None
    assert delivery.reconcile is not None
    assert delivery.reconcile.prefix == "variant-calling/"


def test_reconcile_request_without_options() -> None:
    body = {"message": {"messageId": "r1", "attributes": {"tally-request": "reconcile"}}}
    delivery = parse_delivery(json.dumps(body).encode(), {}, 5)
    assert delivery.reconcile == parsing.Reconcile(prefix=None, page_token=None)


def test_payload_format_absent_with_data_reads_the_resource() -> None:
    case = load(EVENTS / "push_finalize_gcs.json")
    del case["body"]["message"]["attributes"]["payloadFormat"]
    notification = parse(case).notification
    assert notification is not None
    assert notification.size == 104857600


def test_integers_may_arrive_as_json_numbers() -> None:
    resource = {"bucket": "b", "name": "w/1/r/a", "generation": 12, "size": 0}
    attributes = {"eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1"}
    message = {"messageId": "1", "attributes": attributes, "data": encode(resource)}
    notification = parse_delivery(json.dumps({"message": message}).encode(), {}, 5).notification
    assert notification is not None
    assert (notification.generation, notification.size) == (12, 0)


def encode(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


# -- malformed corpus -------------------------------------------------------------------------


@pytest.mark.parametrize("case", MALFORMED, ids=lambda case: case["name"])
def test_malformed_delivery_is_rejected_with_an_actionable_reason(case: dict[str, Any]) -> None:
    with pytest.raises(MalformedDelivery) as caught:
        parse(case)
    error = caught.value
    assert not error.internal, error.reason
    assert case["reason"].lower() in error.reason.lower()
    assert error.delivery_id == case.get("delivery_id")
    salvaged = error.delivery
    assert salvaged.delivery_id  # the rejected row's REQUIRED column
    if case.get("delivery_id") is None:
        assert salvaged.delivery_id.startswith("unparsed-")
    row = event_row(
        salvaged,
        notification=None,
        run_output=None,
        outcome=Outcome.REJECTED,
        detail=error.reason,
        storage_ops=None,
        idempotency_key=None,
        received_time=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=1.0,
        handler_version="test",
    )
    json.dumps(row, ensure_ascii=False).encode("utf-8")


def test_rejection_keeps_attempt_and_publish_time() -> None:
    body = {
        "message": {"messageId": "9", "publishTime": "2026-01-01T00:00:00Z", "data": "!!"},
        "deliveryAttempt": 5,
        "subscription": "projects/p/subscriptions/s",
    }
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(json.dumps(body).encode(), {}, 5)
    salvaged = caught.value.delivery
    assert (salvaged.delivery_id, salvaged.delivery_attempt, salvaged.last_attempt) == (
        "9",
        5,
        True,
    )
    assert salvaged.publish_time == "2026-01-01T00:00:00.000000Z"
    assert salvaged.subscription == "projects/p/subscriptions/s"


def test_unparseable_bodies_get_a_stable_derived_id() -> None:
    ids = set()
    for _ in range(2):
        with pytest.raises(MalformedDelivery) as caught:
            parse_delivery(b"garbage", {}, 5)
        ids.add(caught.value.delivery.delivery_id)
    assert len(ids) == 1


def test_huge_binary_cloudevent_keeps_its_id() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "big-1", "ce-type": "t", "ce-source": "s"}
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(b"{" + b" " * MAX_BODY_BYTES + b"}", headers, 5)
    assert caught.value.delivery_id == "big-1"
    assert caught.value.source is Source.CLOUDEVENT


# -- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("2026-11-25T11:56:29Z", "2026-11-25T11:56:29.000000Z"),
        ("2026-11-25T11:56:29.1978Z", "2026-11-25T11:56:29.197800Z"),
        ("2026-11-25T11:56:29.123456789Z", "2026-11-25T11:56:29.123456Z"),
        ("2026-11-25t11:56:29z", "2026-11-25T11:56:29.000000Z"),
        ("2026-11-25 11:56:29+01:30", "2026-11-25T10:26:29.000000Z"),
        ("2026-11-25T23:30:00-02:00", "2026-11-26T01:30:00.000000Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
    ],
)
def test_rfc3339_normalises(text: str, normalised: str) -> None:
    assert rfc3339(text) == normalised


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25",
        "2026-11-25T11:56:29",  # no zone: ambiguous
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25T11:56:60Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "٢٠٢٦-11-25T11:56:29Z",
        "20261125T115629Z",
        "",
    ],
)
def test_rfc3339_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        rfc3339(text)


def test_rfc3339_of_datetimes() -> None:
    moment = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(moment) == "2026-01-01T10:00:00.000000Z"
    with pytest.raises(ValueError, match="time zone"):
        rfc3339(datetime(2026, 1, 1))  # naive on purpose


# -- fuzzing: any input -> Delivery or MalformedDelivery, never anything else ------------------

HEADER_SETS = [
    {},
    {"content-type": "application/json"},
    {"content-type": "application/cloudevents+json"},
    {
        "ce-specversion": "1.0",
        "ce-id": "f-1",
        "ce-source": "s",
        "ce-type": parsing.MESSAGE_PUBLISHED,
    },
    {
        "ce-specversion": "1.0",
        "ce-id": "f-2",
        "ce-source": "s",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-time": "2026-01-01T00:00:00Z",
    },
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def check(body: bytes, headers: dict[str, str]) -> Delivery | None:
    """Parse; a Delivery must be loggable as is, a rejection must be the input's fault."""
    try:
        delivery = parse_delivery(body, headers, 5)
    except MalformedDelivery as error:
        assert not error.internal, error.reason
        assert error.reason
        assert error.delivery.delivery_id
        return None
    row = event_row(
        delivery,
        notification=None,
        run_output=None,
        outcome=Outcome.RECORDED,
        detail=None,
        storage_ops=None,
        idempotency_key=None,
        received_time=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=None,
        handler_version=None,
    )
    json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if delivery.notification is not None:
        assert delivery.notification.generation <= parsing.MAX_INT64
        assert delivery.notification.name
    return delivery


@FUZZ
@given(body=st.binary(max_size=300), headers=st.sampled_from(HEADER_SETS))
def test_fuzz_random_bytes(body: bytes, headers: dict[str, str]) -> None:
    check(body, headers)


@FUZZ
@given(document=json_values, headers=st.sampled_from(HEADER_SETS))
def test_fuzz_random_json(document: Any, headers: dict[str, str]) -> None:
    check(json.dumps(document).encode(), headers)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def mutate(document: Any, path: tuple[Any, ...], action: str, replacement: Any) -> Any:
    """Delete or replace the value at ``path``; a data field is mutated inside its base64."""
    if not path:
        return replacement
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return result


VALID_BODIES = [
    (load(path)["body"], load(path)["headers"])
    for path in FIXTURES
    if isinstance(load(path)["body"], dict)
]


@FUZZ
@given(
    choice=st.integers(min_value=0, max_value=len(VALID_BODIES) - 1),
    data=st.data(),
    action=st.sampled_from(["delete", "replace"]),
    replacement=json_values,
)
def test_fuzz_mutated_envelopes(choice: int, data: Any, action: str, replacement: Any) -> None:
    body, headers = VALID_BODIES[choice]
    path = data.draw(st.sampled_from(_paths(body)), label="path")
    check(json.dumps(mutate(body, path, action, replacement)).encode(), headers)


def _resource_of(body: dict[str, Any]) -> dict[str, Any] | None:
    message = body.get("message") or body.get("data", {}).get("message")
    if message and message.get("data"):
        return json.loads(base64.b64decode(message["data"]))
    return None


@FUZZ
@given(
    data=st.data(),
    action=st.sampled_from(["delete", "replace"]),
    replacement=json_values | st.from_regex(r"-?[0-9]{1,25}", fullmatch=True),
)
def test_fuzz_mutated_object_resource(data: Any, action: str, replacement: Any) -> None:
    body = load(EVENTS / "push_finalize_gcs.json")["body"]
    resource = _resource_of(body)
    assert resource is not None
    path = data.draw(st.sampled_from(_paths(resource)[1:]), label="path")
    mutated = copy.deepcopy(body)
    mutated["message"]["data"] = encode(mutate(resource, path, action, replacement))
    check(json.dumps(mutated).encode(), {})


@FUZZ
@given(
    attributes=st.dictionaries(
        st.sampled_from(
            [
                "bucketId",
                "objectId",
                "objectGeneration",
                "eventType",
                "eventTime",
                "payloadFormat",
                "overwroteGeneration",
                "tally-request",
                "tally-replayed",
            ]
        )
        | st.text(max_size=5),
        st.text(max_size=30)
        | st.sampled_from(["OBJECT_FINALIZE", "NONE", "JSON_API_V1", "reconcile", "1", "x"])
        | json_values,
        max_size=9,
    ),
    data=st.none() | st.text(max_size=40) | st.binary(max_size=40).map(lambda b: encode(b.hex())),
)
def test_fuzz_attributes(attributes: dict[str, Any], data: Any) -> None:
    message = {"messageId": "m", "attributes": attributes, "data": data}
    check(json.dumps({"message": message}).encode(), {})


@FUZZ
@given(
    structured=st.fixed_dictionaries(
        {},
        optional={
            "specversion": st.sampled_from(["1.0", "0.3", "2"]) | json_values,
            "id": st.text(max_size=5) | json_values,
            "source": st.text(max_size=5) | json_values,
            "type": st.sampled_from(
                [parsing.MESSAGE_PUBLISHED, *parsing.STORAGE_CLOUDEVENT_TYPES, "x"]
            )
            | json_values,
            "time": st.sampled_from(["2026-01-01T00:00:00Z", "nope"]) | json_values,
            "data": json_values,
            "data_base64": st.text(max_size=12) | json_values,
            "datacontenttype": st.sampled_from(["application/json", "text/plain"]),
        },
    )
)
def test_fuzz_structured_cloudevents(structured: dict[str, Any]) -> None:
    check(json.dumps(structured).encode(), {"content-type": "application/cloudevents+json"})


def test_fuzz_found_nothing_internal_in_the_parser_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net works: a bug deep in the parser still ends as MalformedDelivery."""

    def boom(*_: Any, **__: Any) -> None:
        raise KeyError("simulated bug")

    monkeypatch.setattr(parsing._Parser, "_push", boom)
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(b"{}", {}, 5)
    assert caught.value.internal
    assert "bug in tally" in caught.value.reason
