"""The manifest (format 2) and the announcement record: building, canonical bytes, parsing,
revision keys, staleness, splitting."""

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
    ClaimStatus,
    Manifest,
    NotTallys,
    Prior,
    Record,
    State,
    Superseded,
    build_manifest,
    revision_key,
    split_manifest,
    to_bytes,
)
from tally_handler.spec import ExpectedPath, ExpectedPattern

RUN = Layout.parse(DEFAULT_TEMPLATE).run("outs", RunOutput("wf", "1.0", "run 1", "x"))
CLAIMED_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CLAIM = Claim.at("m-1", "pubsub-push:m-1:2026-11-25T11:59:59.000000Z", CLAIMED_AT)


def entry(path: str, created: str | None = "2026-11-25T11:00:00+00:00", **extra: Any) -> Entry:
    fields = {"size": 5, "crc32c": "c", "md5": "m", "content_type": "text/plain"}
    return Entry(path, 7, **(fields | extra), time_created=created, updated=created)


OUTPUTS = [
    Output(entry("a.txt", "2026-11-25T11:00:05.5+00:00"), ExpectedPath("a.txt")),
    Output(entry("s/1.csv", "2026-11-25T10:59:59Z"), ExpectedPattern.compile("s/*.csv", 1)),
]
UNEXPECTED = [entry("stray", "2026-11-25T10:00:00Z")]


def build(**overrides: Any) -> Manifest:
    arguments: dict[str, Any] = {
        "revision": 1,
        "state": State.COMPLETE,
        "outputs": OUTPUTS,
        "unexpected": UNEXPECTED,
        "failure_reason": None,
        "claim": CLAIM,
        "handler_version": "0.1.0",
    }
    return build_manifest(RUN, **(arguments | overrides))


def test_build_manifest() -> None:
    manifest = build().to_json()
    assert manifest["format"] == 2
    assert manifest["run_key"] == "outs/wf/1.0/run 1"
    assert manifest["run_prefix"] == "wf/1.0/run 1/"
    assert manifest["idempotency_key"] == RUN.idempotency_key
    assert (manifest["state"], manifest["revision"], manifest["supersedes"]) == (
        "COMPLETE",
        1,
        None,
    )
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
    # fixed at the claim: every publish of the key carries the same time
    assert manifest["announced_at"] == "2026-11-25T12:00:00.000000Z"
    assert manifest["outputs_object"] is None
    assert "status" not in manifest and "published_at" not in manifest


def test_revisions_have_their_own_keys_and_name_what_they_supersede() -> None:
    second = build(revision=2, supersedes=Superseded(1, RUN.idempotency_key))
    assert revision_key(RUN, 1) == RUN.idempotency_key
    assert second.idempotency_key == revision_key(RUN, 2) != RUN.idempotency_key
    assert len({revision_key(RUN, r) for r in range(1, 50)}) == 49
    assert second.to_json()["supersedes"] == {
        "revision": 1,
        "idempotency_key": RUN.idempotency_key,
    }
    assert second.attributes()["revision"] == "2"


def test_failed_manifest_carries_the_reason() -> None:
    manifest = build(state="FAILED", failure_reason="out of memory on shard 3")
    assert manifest.to_json()["state"] == "FAILED"
    assert manifest.failure_reason == "out of memory on shard 3"
    assert manifest.attributes()["status"] == "FAILED"


def test_build_refuses_unknown_states() -> None:
    with pytest.raises(ValueError, match="DONE"):
        build(state="DONE")


def test_to_bytes_is_canonical() -> None:
    first = build().to_json()
    reordered = dict(reversed(list(first.items())))
    assert to_bytes(first) == to_bytes(reordered)
    data = to_bytes(first)
    assert b"\n" not in data
    assert b", " not in data
    assert json.loads(data) == first
    assert to_bytes({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_manifest_round_trips() -> None:
    manifest = build(revision=3, supersedes=Superseded(2, "k"))
    assert Manifest.from_bytes(manifest.to_bytes(), RUN) == manifest
    assert Manifest.from_bytes(manifest.to_bytes(), RUN).to_bytes() == manifest.to_bytes()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "no kind"),
        (b'{"outputs": []}', "no kind"),
        (b'{"kind": "tally#manifest", "format": 3}', "format 3"),
        (b'{"kind": "tally#manifest", "format": 2, "run_key": "x"}', "another run"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_parse_refuses_other_objects(data: bytes, problem: str) -> None:
    with pytest.raises(NotTallys) as caught:
        Manifest.from_bytes(data, RUN)
    assert problem in str(caught.value)
    assert "move the object" in str(caught.value)


def test_a_manifest_written_before_revisions_reads_as_revision_1() -> None:
    legacy = {k: v for k, v in build().to_json().items() if k not in ("revision", "supersedes")}
    legacy |= {"format": 1, "status": "published", "published_at": "2026-11-25T12:00:01Z"}
    manifest = Manifest.from_bytes(to_bytes(legacy), RUN)
    assert (manifest.revision, manifest.supersedes) == (1, None)
    assert manifest.idempotency_key == RUN.idempotency_key
    assert manifest.generations() == {"a.txt": 7, "s/1.csv": 7}


def test_the_record_round_trips_and_keeps_the_exact_bytes() -> None:
    manifest = build()
    record = Record(
        2,
        ClaimStatus.PUBLISHED,
        CLAIM,
        manifest.to_bytes(),
        published_at="2026-11-25T12:00:01.000000Z",
        manifest_generation=9,
        history=(Prior(1, RUN.idempotency_key, "2026-11-25T11:00:00.000000Z"),),
    )
    again = Record.from_bytes(record.to_bytes())
    assert again == record
    assert again.manifest == manifest.to_bytes()
    assert again.manifest_of(RUN) == manifest
    assert len(record.manifest_md5()) == 24  # base64 of 16 bytes, as Storage's md5Hash


@pytest.mark.parametrize(
    ("age", "status", "stale"),
    [
        (timedelta(seconds=599), ClaimStatus.CLAIMED, False),
        (timedelta(seconds=600), ClaimStatus.CLAIMED, False),
        (timedelta(seconds=601), ClaimStatus.CLAIMED, True),
        (timedelta(hours=5), ClaimStatus.PUBLISHED, False),
        (timedelta(seconds=-30), ClaimStatus.CLAIMED, False),  # a claimant's clock ahead of ours
    ],
)
def test_claim_is_stale(age: timedelta, status: ClaimStatus, stale: bool) -> None:
    record = Record(1, status, CLAIM, b"{}")
    assert record.is_stale(CLAIMED_AT + age, 600) is stale


def test_completion_attributes() -> None:
    assert build().attributes() == {
        "workflow": "wf",
        "version": "1.0",
        "run_id": "run 1",
        "status": "COMPLETE",
        "idempotency_key": RUN.idempotency_key,
        "revision": "1",
        "bucket": "outs",
    }


def test_first_output_time() -> None:
    assert manifests.first_output_time([]) is None
    assert manifests.first_output_time([entry("a", None)]) is None
    times = [entry("a", "2026-01-02T00:00:00Z"), entry("b", "2026-01-01T23:00:00-02:00")]
    assert manifests.first_output_time(times) == "2026-01-02T00:00:00.000000Z"


def test_first_output_time_skips_unreadable_times() -> None:
    times = [entry("a", "garbage"), entry("b", "2026-01-01T00:00:00Z")]
    assert manifests.first_output_time(times) == "2026-01-01T00:00:00.000000Z"


def test_small_manifests_are_not_split() -> None:
    manifest = build()
    assert split_manifest(manifest) == (manifest, None)


def test_large_manifests_move_their_lists_to_a_content_addressed_object() -> None:
    outputs = [
        Output(entry(f"shard/{i:05d}/" + "é" * 480), ExpectedPattern.compile("shard/**", 10_000))
        for i in range(10_000)
    ]
    manifest = build(outputs=outputs)
    assert len(manifest.to_bytes()) > MAX_MANIFEST_BYTES
    small, extra = split_manifest(manifest)
    assert extra is not None
    digest = hashlib.sha256(extra).hexdigest()
    assert small.outputs_object == f"_tally/outputs-{digest}.json"
    assert (small.outputs, small.unexpected) == ((), ())
    assert small.outputs_count == 10_000
    assert len(small.to_bytes()) < 64 * 1024  # a small single-request upload
    assert manifests.outputs_from_object(extra) == manifest.outputs
    assert Manifest.from_bytes(small.to_bytes(), RUN) == small
    assert split_manifest(manifest) == (small, extra)  # same content, same name


def test_ten_thousand_outputs_with_ordinary_names_fit_in_one_manifest() -> None:
    outputs = [
        Output(entry(f"out/{i:05d}.bin"), ExpectedPath(f"out/{i:05d}.bin")) for i in range(10_000)
    ]
    manifest = build(outputs=outputs)
    assert split_manifest(manifest)[1] is None
    print(f"10,000 outputs: manifest of {len(manifest.to_bytes()):,} bytes")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(derandomize=True, max_examples=300, print_blob=True)
@given(key=st.sampled_from([*build().to_json(), "kind"]), value=json_values, drop=st.booleans())
def test_parsing_raises_only_not_tallys(key: str, value: Any, drop: bool) -> None:
    """Whatever a user leaves at the manifest's or the record's name, parsing says NotTallys."""
    document = build().to_json()
    if drop:
        document.pop(key, None)
    else:
        document[key] = value
    try:
        parsed = Manifest.from_bytes(json.dumps(document).encode(), RUN)
    except NotTallys:
        pass
    else:
        assert all(isinstance(v, str) for v in parsed.attributes().values())
    record = {"kind": "tally#announcement", "format": 1, key: value}
    with pytest.raises(NotTallys):
        Record.from_bytes(json.dumps(record).encode())
