"""The manifest: building, canonical bytes, claims, publication, splitting."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tally_handler import manifest as manifests
from tally_handler.completeness import Entry, Output
from tally_handler.layout import DEFAULT_TEMPLATE, Layout, RunOutput
from tally_handler.manifest import (
    MAX_MANIFEST_BYTES,
    Claim,
    State,
    Status,
    build_manifest,
    claim_is_stale,
    completion_attributes,
    mark_published,
    parse_manifest,
    split_manifest,
    to_bytes,
)
from tally_handler.spec import ExpectedPath, ExpectedPattern

RUN = Layout.parse(DEFAULT_TEMPLATE).run_key("outs", RunOutput("wf", "1.0", "run 1", "x"))
CLAIMED_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CLAIM = Claim("m-1", "pubsub-push:m-1:2026-11-25T11:59:59.000000Z", CLAIMED_AT)


def entry(path: str, created: str | None = "2026-11-25T11:00:00+00:00", **extra: Any) -> Entry:
    fields = {"size": 5, "crc32c": "c", "md5": "m", "content_type": "text/plain"}
    return Entry(path, 7, **(fields | extra), time_created=created, updated=created)


OUTPUTS = [
    Output(entry("a.txt", "2026-11-25T11:00:05.5+00:00"), ExpectedPath("a.txt")),
    Output(entry("s/1.csv", "2026-11-25T10:59:59Z"), ExpectedPattern.compile("s/*.csv", 1)),
]
UNEXPECTED = [entry("stray", "2026-11-25T10:00:00Z")]


def build(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "state": State.COMPLETE,
        "status": Status.CLAIMED,
        "outputs": OUTPUTS,
        "unexpected": UNEXPECTED,
        "failure_reason": None,
        "claim": CLAIM,
        "handler_version": "0.1.0",
    }
    return build_manifest(RUN, **(arguments | overrides))


def test_build_manifest() -> None:
    manifest = build()
    assert manifest["run_key"] == "outs/wf/1.0/run 1"
    assert manifest["run_prefix"] == "wf/1.0/run 1/"
    assert manifest["idempotency_key"] == RUN.idempotency_key
    assert (manifest["state"], manifest["status"]) == ("COMPLETE", "claimed")
    assert manifest["outputs"][0] == {
        "path": "a.txt",
        "generation": 7,
        "size": 5,
        "crc32c": "c",
        "md5": "m",
        "content_type": "text/plain",
        "time_created": "2026-11-25T11:00:05.500000Z",
        "updated": "2026-11-25T11:00:05.500000Z",
        "expected": {"path": "a.txt"},
    }
    assert manifest["outputs"][1]["expected"] == {"pattern": "s/*.csv"}
    assert "expected" not in manifest["unexpected"][0]
    assert (manifest["outputs_count"], manifest["unexpected_count"]) == (2, 1)
    assert manifest["first_output_time"] == "2026-11-25T10:00:00.000000Z"
    assert manifest["claim"] == {
        "delivery_id": "m-1",
        "claimant": CLAIM.claimant,
        "claimed_at": "2026-11-25T12:00:00.000000Z",
    }
    assert manifest["published_at"] is None
    assert manifest["outputs_object"] is None


def test_failed_manifest_carries_the_reason() -> None:
    manifest = build(state="FAILED", failure_reason="out of memory on shard 3")
    assert manifest["state"] == "FAILED"
    assert manifest["failure_reason"] == "out of memory on shard 3"
    assert completion_attributes(manifest)["status"] == "FAILED"


@pytest.mark.parametrize(("field", "value"), [("state", "DONE"), ("status", "announced")])
def test_build_refuses_unknown_states(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=value):
        build(**{field: value})


def test_to_bytes_is_canonical() -> None:
    first = build()
    reordered = dict(reversed(list(build().items())))
    assert to_bytes(first) == to_bytes(reordered)
    data = to_bytes(first)
    assert b"\n" not in data
    assert b", " not in data
    assert json.loads(data) == first
    assert to_bytes({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_parse_manifest_round_trips() -> None:
    manifest = build()
    assert parse_manifest(to_bytes(manifest)) == manifest


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "no kind"),
        (b'{"outputs": []}', "no kind"),
        (b'{"kind": "tally#manifest"}', "lacks run_key"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_parse_manifest_refuses_other_objects(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match="tally manifest") as caught:
        parse_manifest(data)
    assert problem in str(caught.value)
    assert "move the object" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"state": "DONE"}, "state 'DONE'"),
        ({"status": "x"}, "status 'x'"),
        ({"claim": {"claimed_at": "2026-01-01T00:00:00Z"}}, "delivery_id"),
        ({"claim": {"delivery_id": "1", "claimed_at": "yesterday"}}, "claimed_at"),
        ({"claim": {"delivery_id": "1"}}, "claimed_at"),
    ],
)
def test_parse_manifest_refuses_broken_manifests(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_manifest(to_bytes(build() | change))


def test_mark_published() -> None:
    claimed = build()
    published = mark_published(claimed, datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC))
    assert published["status"] == "published"
    assert published["published_at"] == "2026-11-25T12:00:01.000000Z"
    assert claimed["status"] == "claimed"  # not mutated
    assert {k: v for k, v in published.items() if k not in ("status", "published_at")} == {
        k: v for k, v in claimed.items() if k not in ("status", "published_at")
    }
    assert parse_manifest(to_bytes(published)) == published


@pytest.mark.parametrize(
    ("age", "status", "stale"),
    [
        (timedelta(seconds=599), Status.CLAIMED, False),
        (timedelta(seconds=600), Status.CLAIMED, False),
        (timedelta(seconds=601), Status.CLAIMED, True),
        (timedelta(hours=5), Status.PUBLISHED, False),
        (timedelta(seconds=-30), Status.CLAIMED, False),  # a claimant's clock ahead of ours
    ],
)
def test_claim_is_stale(age: timedelta, status: Status, stale: bool) -> None:
    manifest = build(status=status)
    assert claim_is_stale(manifest, CLAIMED_AT + age, 600) is stale


def test_completion_attributes() -> None:
    assert completion_attributes(build()) == {
        "workflow": "wf",
        "version": "1.0",
        "run_id": "run 1",
        "status": "COMPLETE",
        "idempotency_key": RUN.idempotency_key,
        "bucket": "outs",
    }


def test_first_output_time() -> None:
    assert manifests.first_output_time([]) is None
    assert manifests.first_output_time([entry("a", None)]) is None
    times = [entry("a", "2026-01-02T00:00:00Z"), entry("b", "2026-01-01T23:00:00-02:00")]
    assert manifests.first_output_time(times) == "2026-01-02T00:00:00.000000Z"


def test_small_manifests_are_not_split() -> None:
    manifest = build()
    small, extra = split_manifest(manifest)
    assert (small, extra) == (manifest, None)


def test_large_manifests_move_their_lists_to_a_content_addressed_object() -> None:
    outputs = [
        Output(entry(f"shard/{i:05d}/" + "é" * 480), ExpectedPattern.compile("shard/**", 10_000))
        for i in range(10_000)
    ]
    manifest = build(outputs=outputs)
    assert len(to_bytes(manifest)) > MAX_MANIFEST_BYTES
    small, extra = split_manifest(manifest)
    assert extra is not None
    digest = hashlib.sha256(extra).hexdigest()
    assert small["outputs_object"] == f"_tally/outputs-{digest}.json"
    assert (small["outputs"], small["unexpected"]) == ([], [])
    assert small["outputs_count"] == 10_000
    assert len(to_bytes(small)) < 64 * 1024  # a small single-request upload
    lists = json.loads(extra)
    assert lists["outputs"] == manifest["outputs"]
    assert lists["unexpected"] == manifest["unexpected"]
    assert parse_manifest(to_bytes(small)) == small
    assert split_manifest(manifest) == (small, extra)  # same content, same name


def test_ten_thousand_outputs_with_ordinary_names_fit_in_one_manifest() -> None:
    outputs = [
        Output(entry(f"out/{i:05d}.bin"), ExpectedPath(f"out/{i:05d}.bin")) for i in range(10_000)
    ]
    manifest = build(outputs=outputs)
    assert split_manifest(manifest)[1] is None
    print(f"10,000 outputs: manifest of {len(to_bytes(manifest)):,} bytes")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(derandomize=True, max_examples=300, print_blob=True)
@given(
    key=st.sampled_from([*build(), "kind"]),
    value=json_values,
    drop=st.booleans(),
)
def test_parse_manifest_raises_only_value_error(key: str, value: Any, drop: bool) -> None:
    """The lead's claim path catches ValueError: nothing else may escape for any stored object."""
    document = build()
    if drop:
        document.pop(key)
    else:
        document[key] = value
    try:
        parsed = parse_manifest(json.dumps(document).encode())
    except ValueError:
        return
    claim_is_stale(parsed, CLAIMED_AT, 600)
    assert all(isinstance(v, str) for v in completion_attributes(parsed).values())


def test_first_output_time_skips_unreadable_times() -> None:
    times = [entry("a", "garbage"), entry("b", "2026-01-01T00:00:00Z")]
    assert manifests.first_output_time(times) == "2026-01-01T00:00:00.000000Z"
