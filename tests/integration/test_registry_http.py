"""The registry over HTTP: functions-framework serving functions/registry on fake-gcs-server.

Runs on the session's local platform (the `stack` fixture). TALLY_REGISTRY_STANDALONE=1 runs the
same tests on devstack's RegistryStack instead (Storage + registry + token signer only).
Tests isolate themselves with unique workflow names.

The schemathesis run is bounded for `make test`; TALLY_SCHEMATHESIS_MAX_EXAMPLES and
TALLY_SCHEMATHESIS_MAX_TIME make it longer (see functions/registry/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import poll

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WRITER = "writer@tally.test"


@pytest.fixture(scope="module")
def reg(request: pytest.FixtureRequest) -> Iterator[Any]:
    if os.environ.get("TALLY_REGISTRY_STANDALONE") == "1":
        from devstack import RegistryStack

        with RegistryStack() as local:
            yield local
    else:
        yield request.getfixturevalue("stack")


@pytest.fixture
def wf() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


_local = threading.local()


def session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def spec_doc(workflow: str, version: str, *paths: str, **extra: Any) -> dict[str, Any]:
    outs: list[dict[str, Any]] = [{"path": p} for p in (paths or ("a.txt",))]
    return {"workflow": workflow, "version": version, "expected_outputs": outs, **extra}


def put(
    reg: Any,
    path: str,
    body: Any,
    token: str | None = None,
    anonymous: bool = False,
    **headers: str,
) -> Any:
    """PUT JSON with `token`, else with a fresh writer's token (none when `anonymous`)."""
    hdrs = {"Content-Type": "application/json", **headers}
    if token is None and not anonymous:
        token = reg.mint_token(WRITER)
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return session().put(reg.registry_url + path, data=data, headers=hdrs, timeout=30)


def get(reg: Any, path: str, method: str = "GET", **headers: str) -> Any:
    return session().request(method, reg.registry_url + path, headers=headers, timeout=30)


def error(resp: Any) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/json", resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"]
    return body["error"]


# -- reads -------------------------------------------------------------------------------------


def test_health_and_openapi(reg: Any) -> None:
    resp = get(reg, "/healthz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})
    resp = get(reg, "/openapi.json")
    assert resp.status_code == 200
    assert resp.json()["openapi"] == "3.1.0"
    assert resp.json() == json.loads((ROOT / "functions/registry/openapi.json").read_text())


def test_samples_uploaded_like_terraform_are_served(reg: Any) -> None:
    listing = get(reg, "/workflows")
    assert listing.status_code == 200
    assert listing.headers["Cache-Control"] == "public, max-age=10"
    by_name = {w["workflow"]: w for w in listing.json()["workflows"]}
    assert by_name["variant-calling"]["versions"][:2] == ["1.0.0", "1.1.0"]
    assert "rna-seq" in by_name

    resp = get(reg, "/workflows/variant-calling/versions/1.1.0")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    pattern = [e for e in resp.json()["expected_outputs"] if "pattern" in e]
    assert pattern[0]["pattern"] == "shards/part-*.parquet" and pattern[0]["count"] == 4
    assert get(reg, "/workflows/rna-seq/versions/2.0.0").json()["deadline_minutes"] == 120


def test_etag_304_and_head_over_http(reg: Any) -> None:
    for path in (
        "/workflows",
        "/workflows/rna-seq",
        "/workflows/rna-seq/versions/2.0.0",
        "/workflows/rna-seq/default",
        "/openapi.json",
    ):
        first = get(reg, path)
        tag = first.headers["ETag"]
        again = get(reg, path, **{"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"", path
        assert again.headers["ETag"] == tag
        head = get(reg, path, "HEAD")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["ETag"] == tag
        assert int(head.headers["Content-Length"]) == len(first.content)
    assert get(reg, "/healthz", "HEAD").status_code == 200


def test_unknowns_are_named_404s(reg: Any, wf: str) -> None:
    resp = get(reg, f"/workflows/{wf}")
    assert resp.status_code == 404 and error(resp)["code"] == "unknown-workflow"
    assert wf in error(resp)["message"]
    resp = get(reg, f"/workflows/{wf}/versions/1.0.0")
    assert resp.status_code == 404 and error(resp)["code"] == "unknown-workflow"
    resp = get(reg, "/workflows/rna-seq/versions/0.0.404")
    assert resp.status_code == 404 and error(resp)["code"] == "unknown-version"
    assert "0.0.404" in error(resp)["message"]
    resp = get(reg, f"/workflows/{wf}/default")
    assert resp.status_code == 404 and error(resp)["code"] == "unknown-workflow"
    for path in ("/", "/nope", "/workflows/rna-seq/versions", "/workflows/rna-seq/x/y/z"):
        resp = get(reg, path)
        assert resp.status_code == 404 and error(resp)["code"] == "not-found", path


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/workflows", "GET, HEAD"),
        ("DELETE", "/workflows/rna-seq/versions/2.0.0", "GET, HEAD, PUT"),
        ("PATCH", "/workflows/rna-seq/default", "GET, HEAD, PUT"),
        ("OPTIONS", "/workflows/rna-seq", "GET, HEAD"),
        ("PUT", "/healthz", "GET, HEAD"),
    ],
)
def test_other_methods_are_405(reg: Any, method: str, path: str, allow: str) -> None:
    resp = get(reg, path, method)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == allow
    assert error(resp)["code"] == "method-not-allowed"


# -- registration ------------------------------------------------------------------------------


def test_register_lifecycle(reg: Any, wf: str) -> None:
    url = f"/workflows/{wf}/versions/1.0.0"
    doc = spec_doc(wf, "1.0.0", "calls.vcf.gz", deadline_minutes=30)
    created = put(reg, url, doc)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == url
    # The object is in the bucket under the documented name.
    blob = reg.storage_client().bucket(reg.registry_bucket).get_blob(f"workflows/{wf}/1.0.0.json")
    assert blob is not None and json.loads(blob.download_as_bytes())["workflow"] == wf

    same = put(reg, url, {**doc, "expected_outputs": [{"required": True, "path": "calls.vcf.gz"}]})
    assert same.status_code == 200
    assert same.headers["ETag"] == created.headers["ETag"]
    changed = put(reg, url, spec_doc(wf, "1.0.0", "other.txt"))
    assert changed.status_code == 409 and error(changed)["code"] == "version-exists"
    assert get(reg, url).json()["expected_outputs"][0]["path"] == "calls.vcf.gz"

    assert put(reg, f"/workflows/{wf}/versions/1.10.0", spec_doc(wf, "1.10.0")).status_code == 201
    assert put(reg, f"/workflows/{wf}/versions/1.9.0", spec_doc(wf, "1.9.0")).status_code == 201
    info = get(reg, f"/workflows/{wf}").json()
    assert info["versions"] == ["1.0.0", "1.9.0", "1.10.0"]
    assert (info["default_version"], info["default_source"]) == ("1.10.0", "highest")

    resp = put(reg, f"/workflows/{wf}/default", {"version": "1.0.0"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "workflow": wf,
        "version": "1.0.0",
        "source": "explicit",
        "previous": None,
    }
    default = get(reg, f"/workflows/{wf}/default")
    assert default.status_code == 200
    assert (default.json()["version"], default.json()["source"]) == ("1.0.0", "explicit")
    assert default.json()["spec"]["deadline_minutes"] == 30
    assert default.headers["Content-Location"] == url
    pointer = reg.storage_client().bucket(reg.registry_bucket).blob(f"defaults/{wf}.json")
    assert json.loads(pointer.download_as_bytes()) == {"version": "1.0.0"}

    resp = put(reg, f"/workflows/{wf}/default", {"version": "3.0.0"})
    assert resp.status_code == 404 and error(resp)["code"] == "unknown-version"
    resp = put(reg, f"/workflows/{wf}-missing/default", {"version": "1.0.0"})
    assert resp.status_code == 404 and error(resp)["code"] == "unknown-workflow"


def test_spec_uploaded_directly_is_served_at_once(reg: Any, wf: str) -> None:
    assert get(reg, f"/workflows/{wf}/versions/2.0.0").status_code == 404
    bucket = reg.storage_client().bucket(reg.registry_bucket)
    bucket.blob(f"workflows/{wf}/2.0.0.json").upload_from_string(
        json.dumps(spec_doc(wf, "2.0.0")), content_type="application/json"
    )
    assert get(reg, f"/workflows/{wf}/versions/2.0.0").status_code == 200


@pytest.mark.parametrize("same", [False, True], ids=["different-bodies", "identical-bodies"])
def test_sixteen_concurrent_registrations_one_winner(reg: Any, wf: str, same: bool) -> None:
    tokens = [reg.mint_token(WRITER) for _ in range(16)]
    barrier = threading.Barrier(16)

    def attempt(i: int) -> int:
        doc = spec_doc(wf, "1.0.0", "a.txt" if same else f"out-{i}.txt")
        barrier.wait(30)
        return put(reg, f"/workflows/{wf}/versions/1.0.0", doc, token=tokens[i]).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(attempt, range(16)))
    loser = 200 if same else 409
    assert statuses.count(201) == 1, statuses
    assert statuses.count(loser) == 15, statuses


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid-json"),
        (b'{"workflow": "x", "workflow": "y"}', "application/json", 400, "invalid-json"),
        (b"", "application/json", 400, "invalid-json"),
        (b'{"workflow": "\\udc80"}', "application/json", 400, "invalid-json"),
        (b"{}", "text/plain", 415, "unsupported-media-type"),
        (b"workflow=x", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b"{" + b" " * (2 * 1024 * 1024) + b"}", "application/json", 413, "payload-too-large"),
    ],
    ids=["syntax", "duplicate-key", "empty", "surrogate", "text", "form", "oversize"],
)
def test_bad_bodies(reg: Any, wf: str, body: bytes, ctype: str, status: int, code: str) -> None:
    resp = put(reg, f"/workflows/{wf}/versions/1.0.0", body, **{"Content-Type": ctype})
    assert resp.status_code == status, resp.text
    assert error(resp)["code"] == code


@pytest.mark.parametrize(
    "path",
    [
        "/workflows/%2e%2e/versions/1.0.0",
        "/workflows/%2E%2E%2F%2E%2E/versions/1.0.0",
        "/workflows/X/versions/..%2F..%2Fdefaults%2Fx",
        "/workflows/caf%C3%A9/versions/1.0.0",
        "/workflows/%EF%BC%B7%EF%BC%A6/versions/1.0.0",  # fullwidth letters
        "/workflows/wf%E2%80%8B/versions/1.0.0",  # zero-width space
        "/workflows/wf%00/versions/1.0.0",
        "/workflows/%FF%FE/versions/1.0.0",
        "/workflows/%F0%9F%98%80/versions/1.0.0",
    ],
)
def test_traversal_and_odd_unicode_names_are_refused(reg: Any, path: str) -> None:
    token = reg.mint_token(WRITER)
    for resp in (
        get(reg, path),
        put(reg, path, spec_doc("x", "1.0.0"), token=token),
    ):
        assert resp.status_code in (400, 404), (path, resp.status_code, resp.text)
        assert error(resp)["code"] in ("invalid-name", "not-found")
    names = [b.name for b in reg.storage_client().list_blobs(reg.registry_bucket)]
    assert not [n for n in names if not n.startswith(("workflows/", "defaults/"))]


@pytest.mark.parametrize(
    ("entries", "pointer", "needle"),
    [
        ([{"path": "/etc/passwd"}], "/expected_outputs/0/path", "absolute"),
        ([{"path": "a/../../b"}], "/expected_outputs/0/path", ".."),
        ([], "/expected_outputs", "at least one"),
        ([{}], "/expected_outputs/0", "exactly one"),
        ([{"path": "a"}, {"path": "a"}], "/expected_outputs/1/path", "duplicate"),
        ([{"path": "output.json"}], "/expected_outputs/0/path", "manifest"),
        ([{"path": "_FAILED"}], "/expected_outputs/0/path", "failure marker"),
        ([{"path": "_tally/state"}], "/expected_outputs/0/path", "_tally/"),
        ([{"path": "_tally"}], "/expected_outputs/0/path", "reserved folder"),
        ([{"path": "a" * 1020}], "/expected_outputs/0/path", "fit in"),
        ([{"pattern": "s/[x", "count": 2}], "/expected_outputs/0/pattern", "invalid glob"),
        ([{"pattern": "s/*"}], "/expected_outputs/0", "count"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "empty",
        "empty-entry",
        "duplicate",
        "manifest",
        "failed",
        "reserved",
        "tally-folder",
        "too-long",
        "glob",
        "no-count",
    ],
)
def test_invalid_specs_are_400_with_pointers(
    reg: Any, wf: str, entries: list[Any], pointer: str, needle: str
) -> None:
    doc = {"workflow": wf, "version": "1.0.0", "expected_outputs": entries}
    resp = put(reg, f"/workflows/{wf}/versions/1.0.0", doc)
    assert resp.status_code == 400, resp.text
    e = error(resp)
    assert e["code"] == "invalid-spec"
    assert any(d["pointer"] == pointer and needle in d["message"] for d in e["details"]), e
    assert get(reg, f"/workflows/{wf}").status_code == 404


def test_every_problem_listed_and_url_mismatch(reg: Any, wf: str) -> None:
    doc = {
        "workflow": "someone-else",
        "version": "9",
        "deadline_minutes": 0,
        "expected_outputs": [{"path": "/a"}, {"pattern": "s/[z-a]", "count": 1}, {"path": "ok"}],
    }
    resp = put(reg, f"/workflows/{wf}/versions/1.0.0", doc)
    assert resp.status_code == 400
    pointers = [d["pointer"] for d in error(resp)["details"]]
    assert pointers == [
        "/deadline_minutes",
        "/expected_outputs/0/path",
        "/expected_outputs/1/pattern",
        "/version",
        "/workflow",
    ]


def test_workflow_named_tally_is_refused(reg: Any) -> None:
    resp = put(reg, "/workflows/_tally/versions/1.0.0", spec_doc("_tally", "1.0.0"))
    assert resp.status_code == 400, resp.text
    assert [d["pointer"] for d in error(resp)["details"]] == ["/workflow"]


# -- reconcile requests ------------------------------------------------------------------------


def test_registration_publishes_a_reconcile_request(reg: Any, wf: str) -> None:
    """A PUT queues a reconcile of its version on object-events; a refused PUT queues nothing."""
    if not hasattr(reg, "subscriber"):
        pytest.skip("the standalone registry has no Pub/Sub")
    names = reg.names
    observer = names.subscription(f"registry-reconcile-{wf}")
    subscriber = reg.subscriber()
    subscriber.create_subscription(
        request={
            "name": observer,
            "topic": names.topic(names.object_events_topic),
            "ack_deadline_seconds": 60,
        }
    )
    seen: list[Any] = []

    def pull() -> list[Any]:
        resp = subscriber.pull(
            request={"subscription": observer, "max_messages": 100, "return_immediately": True},
            timeout=10,
        )
        if resp.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": observer,
                    "ack_ids": [r.ack_id for r in resp.received_messages],
                }
            )
        seen.extend(
            r.message for r in resp.received_messages if r.message.attributes.get("workflow") == wf
        )
        return seen

    try:
        refused = put(reg, f"/workflows/{wf}/versions/0.9", spec_doc(wf, "0.9", "output.json"))
        assert refused.status_code == 400
        resp = put(reg, f"/workflows/{wf}/versions/1.0.0", spec_doc(wf, "1.0.0"))
        assert (resp.status_code, resp.headers["Tally-Reconcile"]) == (201, "requested")
        message = poll(pull, timeout=30, message="the reconcile request")[0]
        assert json.loads(message.data) == {}
        assert dict(message.attributes) == {
            "tally-request": "reconcile",
            "workflow": wf,
            "version": "1.0.0",
            "prefix": f"{wf}/1.0.0/",
        }
        assert [m.attributes["version"] for m in pull()] == ["1.0.0"]
    finally:
        subscriber.delete_subscription(request={"subscription": observer})


# -- auth --------------------------------------------------------------------------------------


def test_auth_refusals_and_a_good_token(reg: Any, wf: str) -> None:
    url = f"/workflows/{wf}/versions/1.0.0"
    doc = spec_doc(wf, "1.0.0")
    cases = {
        "missing": (None, 401),
        "malformed": ("not.a.jwt", 401),
        "expired": (reg.mint_token(WRITER, expires_in=-3600), 401),
        "wrong-audience": (reg.mint_token(WRITER, audience="https://elsewhere.test"), 401),
        "wrong-signer": (reg.mint_token(WRITER, signer="other"), 401),
        "not-a-writer": (reg.mint_token("intruder@tally.test"), 403),
    }
    for name, (token, status) in cases.items():
        resp = put(reg, url, doc, token=token, anonymous=token is None)
        assert resp.status_code == status, (name, resp.text)
        assert error(resp)["code"] in (
            "missing-token",
            "malformed-token",
            "invalid-token",
            "forbidden",
        ), name
        if token:
            assert token not in resp.text
    basic = session().put(
        reg.registry_url + url,
        json=doc,
        headers={"Authorization": "Basic d3JpdGVyOng="},
        timeout=30,
    )
    assert basic.status_code == 401
    resp = put(reg, f"/workflows/{wf}/default", {"version": "1.0.0"}, anonymous=True)
    assert resp.status_code == 401
    assert get(reg, f"/workflows/{wf}").status_code == 404  # nothing was written
    resp = put(reg, url, doc)
    assert resp.status_code == 201


# -- schemathesis --------------------------------------------------------------------------------


def test_schemathesis_conformance(reg: Any, tmp_path: Path) -> None:
    """Property-based requests from /openapi.json: no 5xx, every response as documented."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is in requirements-dev.txt"
    max_examples = os.environ.get("TALLY_SCHEMATHESIS_MAX_EXAMPLES", "30")
    max_time = os.environ.get("TALLY_SCHEMATHESIS_MAX_TIME")
    argv = [
        exe,
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{reg.registry_url}/openapi.json",
        # Every check but positive_data_acceptance: a schema-valid spec is still refused when
        # its workflow/version disagree with the URL, a rule JSON Schema cannot express.
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        max_examples,
        "--header",
        f"Authorization: Bearer {reg.mint_token(WRITER, expires_in=7200)}",
        "--request-timeout",
        "10",
        "--workers",
        "2",
        "--seed",
        os.environ.get("TALLY_SCHEMATHESIS_SEED", "20241125"),
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    if max_time:
        argv += ["--max-time", max_time]
    # The run writes with a writer's token (random workflows, and the documented examples on
    # the sample workflows): put the samples back as they were for the rest of the session.
    bucket = reg.storage_client().bucket(reg.registry_bucket)
    samples = (
        "workflows/variant-calling/",
        "workflows/rna-seq/",
        "defaults/variant-calling.json",
        "defaults/rna-seq.json",
    )

    def snapshot() -> dict[str, bytes]:
        return {
            b.name: b.download_as_bytes()
            for prefix in samples
            for b in reg.storage_client().list_blobs(reg.registry_bucket, prefix=prefix)
        }

    before = snapshot()
    try:
        out = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=1800, cwd=tmp_path
        )
    finally:
        for name, data in snapshot().items():
            if name not in before:
                bucket.blob(name).delete()
            elif data != before[name]:
                bucket.blob(name).upload_from_string(before[name], content_type="application/json")
    assert out.returncode == 0, out.stdout[-12000:] + out.stderr[-3000:]
