"""The manifest (format 3) and the announcement record (format 2): building, canonical bytes,
parsing (older formats included), revision keys, staleness, splitting."""

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
    assert manifest["format"] == 3
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
        "claimed_time": "2026-11-25T12:00:00.000000Z",
    }
    # fixed at the claim: every publish of the key carries the same time
    assert manifest["announced_time"] == "2026-11-25T12:00:00.000000Z"
    assert manifest["outputs_object"] is None
    assert "claim_status" not in manifest and "published_time" not in manifest


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
    assert manifest.attributes()["state"] == "FAILED"


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
        (b'{"kind": "tally#manifest", "format": 4}', "format 4"),
        (b'{"kind": "tally#manifest", "format": 2, "run_key": "x"}', "another run"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_parse_refuses_other_objects(data: bytes, problem: str) -> None:
    with pytest.raises(NotTallys) as caught:
        Manifest.from_bytes(data, RUN)
    assert problem in str(caught.value)
    assert "move the object" in str(caught.value)


def format_2(manifest: Manifest) -> dict[str, Any]:
    """The document tally wrote for ``manifest`` before format 3 renamed two keys."""
    document = manifest.to_json()
    claim = document.pop("claim")
    claim["claimed_at"] = claim.pop("claimed_time")
    return document | {"format": 2, "claim": claim, "announced_at": document.pop("announced_time")}


def format_1(manifest: Manifest) -> dict[str, Any]:
    """Before revisions: no revision, no supersedes, the claim status and publish time inside."""
    legacy = {k: v for k, v in format_2(manifest).items() if k not in ("revision", "supersedes")}
    del legacy["announced_at"]
    return legacy | {"format": 1, "status": "published", "published_at": "2026-11-25T12:00:01Z"}


def test_a_manifest_written_before_revisions_reads_as_revision_1() -> None:
    manifest = Manifest.from_bytes(to_bytes(format_1(build())), RUN)
    assert (manifest.revision, manifest.supersedes) == (1, None)
    assert manifest.idempotency_key == RUN.idempotency_key
    assert manifest.generations() == {"a.txt": 7, "s/1.csv": 7}
    assert manifest.claim == CLAIM


def test_a_format_2_manifest_reads_as_the_same_revision() -> None:
    second = build(revision=2, supersedes=Superseded(1, RUN.idempotency_key))
    old = to_bytes(format_2(second))
    assert b'"announced_at"' in old and b'"claimed_at"' in old
    assert Manifest.from_bytes(old, RUN) == second
    assert Manifest.from_bytes(old, RUN).idempotency_key == revision_key(RUN, 2)


def test_a_format_1_record_reads_and_keeps_its_manifest_bytes() -> None:
    """A record written before the upgrade: old key names, and format-2 manifest bytes that stay
    the revision's content forever (rewriting the record never re-serialises them)."""
    old_manifest = to_bytes(format_2(build(revision=2, supersedes=Superseded(1, "k1"))))
    old_record = {
        "kind": "tally#announcement",
        "format": 1,
        "revision": 2,
        "status": "published",
        "claim": {
            "delivery_id": "m-1",
            "claimant": CLAIM.claimant,
            "claimed_at": "2026-11-25T12:00:00Z",
        },
        "manifest": old_manifest.decode(),
        "published_at": "2026-11-25T12:00:01Z",
        "manifest_generation": 9,
        "history": [
            {"revision": 1, "idempotency_key": "k1", "published_at": "2026-11-25T11:00:00Z"}
        ],
    }
    record = Record.from_bytes(to_bytes(old_record))
    assert record == Record(
        2,
        ClaimStatus.PUBLISHED,
        CLAIM,
        old_manifest,
        published_time="2026-11-25T12:00:01Z",
        history=(Prior(1, "k1", "2026-11-25T11:00:00Z"),),
    )
    assert record.manifest_of(RUN).idempotency_key == revision_key(RUN, 2)
    rewritten = json.loads(record.to_bytes())
    assert (rewritten["format"], rewritten["claim_status"]) == (2, "published")
    assert rewritten["manifest"].encode() == old_manifest  # the revision's bytes, unchanged
    assert Record.from_bytes(record.to_bytes()) == record


@pytest.mark.parametrize("manifest_format", [1, 2, 3])
def test_a_manifest_without_a_record_is_adopted_with_its_exact_bytes(manifest_format: int) -> None:
    manifest = build()
    document = {1: format_1, 2: format_2, 3: Manifest.to_json}[manifest_format](manifest)
    data = to_bytes(document)
    record = manifests.adopted_record(data, RUN)
    assert (record.revision, record.claim_status, record.manifest) == (
        1,
        ClaimStatus.PUBLISHED,
        data,
    )
    assert record.published_time == ("2026-11-25T12:00:01Z" if manifest_format == 1 else None)
    claimed = to_bytes(format_1(manifest) | {"status": "claimed", "published_at": None})
    assert manifests.adopted_record(claimed, RUN).claim_status is ClaimStatus.CLAIMED


def test_the_record_round_trips_and_keeps_the_exact_bytes() -> None:
    manifest = build()
    record = Record(
        2,
        ClaimStatus.PUBLISHED,
        CLAIM,
        manifest.to_bytes(),
        published_time="2026-11-25T12:00:01.000000Z",
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
        "state": "COMPLETE",
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


@settings(derandomize=True, max_examples=300, deadline=None, print_blob=True)
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
    for record_format in (1, 2):
        record = {"kind": "tally#announcement", "format": record_format, key: value}
        with pytest.raises(NotTallys):
            Record.from_bytes(json.dumps(record).encode())
