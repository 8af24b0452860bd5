"""The API in-process: every route and status over a werkzeug test client, against an in-memory
store with Cloud Storage's generation semantics and a stub authorizer (real tokens are tested in
test_registry_auth.py and, over HTTP against fake-gcs-server, in tests/integration)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import flask
import pytest
import werkzeug.routing
from tally_registry import entry
from tally_registry.api import Api, Request
from tally_registry.errors import ApiError, ConfigError, StoreError
from tally_registry.layout import RunLayout
from tally_registry.reconcile import MemoryReconcileQueue
from tally_registry.registry import Registry, default_object, spec_object
from tally_registry.spec import RunFolder
from tally_registry.store import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
WRITER = "writer@tally.test"
GOOD = {"Authorization": "Bearer good"}
JSON_WRITE = {**GOOD, "Content-Type": "application/json"}


class StubAuthorizer:
    def authorize(self, authorization: str | None) -> str:
        if not authorization:
            raise ApiError(401, "missing-token", "send a token")
        if authorization == "Bearer good":
            return WRITER
        if authorization == "Bearer outsider":
            raise ApiError(403, "forbidden", "not a writer")
        raise ApiError(401, "invalid-token", "bad token")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flask_app() -> flask.Flask:
    """The routing functions-framework sets up for an HTTP function, around entry.handle."""
    app = flask.Flask("registry-test")
    app.url_map.add(werkzeug.routing.Rule("/", defaults={"path": ""}, endpoint="run"))
    app.url_map.add(werkzeug.routing.Rule("/<path:path>", endpoint="run"))
    app.view_functions["run"] = lambda path: entry.handle(flask.request._get_current_object())
    return app


def spec_doc(workflow: str, version: str, *paths: str, **extra: Any) -> dict[str, Any]:
    outs = [{"path": p} for p in (paths or ("a.txt",))]
    return {"workflow": workflow, "version": version, "expected_outputs": outs, **extra}


def seed(store: MemoryStore, doc: dict[str, Any]) -> None:
    """Upload a spec as Terraform does: the file's bytes, as-is."""
    name = spec_object(doc["workflow"], doc["version"])
    store.write(name, json.dumps(doc, indent=2).encode(), 0)


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    for path in sorted((ROOT / "workflows").glob("*/*.json")):
        s.write(f"workflows/{path.parent.name}/{path.name}", path.read_bytes(), 0)
    return s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue() -> MemoryReconcileQueue:
    return MemoryReconcileQueue()


@pytest.fixture
def api(store: MemoryStore, clock: Clock, queue: MemoryReconcileQueue) -> Api:
    return Api(Registry(store, list_ttl=10, clock=clock), StubAuthorizer(), reconcile=queue)


@pytest.fixture
def client(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(entry, "_api", api)
    with flask_app().test_client() as c:
        yield c


def err(resp: Any) -> dict[str, Any]:
    body = resp.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


# -- reads -----------------------------------------------------------------------------------


def test_list_workflows(client: Any) -> None:
    resp = client.get("/workflows")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "public, max-age=10"
    assert resp.headers["ETag"].startswith('"')
    by_name = {w["workflow"]: w for w in resp.get_json()["workflows"]}
    assert by_name["variant-calling"] == {
        "workflow": "variant-calling",
        "versions": ["1.0.0", "1.1.0"],
        "default_version": "1.1.0",
        "default_source": "highest",
    }
    assert by_name["rna-seq"]["versions"] == ["2.0.0"]


def test_get_workflow_and_unknown(client: Any) -> None:
    resp = client.get("/workflows/variant-calling")
    assert resp.status_code == 200
    assert resp.get_json()["default_version"] == "1.1.0"
    resp = client.get("/workflows/nope")
    assert resp.status_code == 404
    assert err(resp)["code"] == "unknown-workflow"
    assert "'nope'" in err(resp)["message"]


def test_get_version_spec_is_normalized_and_immutable(client: Any) -> None:
    resp = client.get("/workflows/variant-calling/versions/1.1.0")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    doc = resp.get_json()
    assert doc["workflow"] == "variant-calling"
    assert doc["deadline_minutes"] == 240
    shards = [e for e in doc["expected_outputs"] if "pattern" in e]
    assert shards == [
        {
            "pattern": "shards/part-*.parquet",
            "count": 4,
            "required": True,
            "description": "The calls in 4 Parquet shards.",
        }
    ]
    assert all("required" in e for e in doc["expected_outputs"])


def test_unknown_version_and_unknown_workflow_are_named(client: Any) -> None:
    resp = client.get("/workflows/variant-calling/versions/9.9.9")
    assert resp.status_code == 404
    e = err(resp)
    assert e["code"] == "unknown-version"
    assert "'9.9.9'" in e["message"] and "1.0.0" in e["message"]
    assert e["details"][0]["known_versions"] == ["1.0.0", "1.1.0"]
    resp = client.get("/workflows/ghost/versions/1.0.0")
    assert resp.status_code == 404
    assert err(resp)["code"] == "unknown-workflow"


def test_default_is_highest_then_explicit(client: Any) -> None:
    resp = client.get("/workflows/variant-calling/default")
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["version"], body["source"]) == ("1.1.0", "highest")
    assert body["spec"]["version"] == "1.1.0"
    assert resp.headers["Content-Location"] == "/workflows/variant-calling/versions/1.1.0"
    assert resp.headers["Cache-Control"] == "public, max-age=10"

    resp = client.put("/workflows/variant-calling/default", json={"version": "1.0.0"}, headers=GOOD)
    assert resp.status_code == 200
    assert resp.get_json() == {
        "workflow": "variant-calling",
        "version": "1.0.0",
        "source": "explicit",
        "previous": None,
    }
    body = client.get("/workflows/variant-calling/default").get_json()
    assert (body["version"], body["source"]) == ("1.0.0", "explicit")
    info = client.get("/workflows/variant-calling").get_json()
    assert (info["default_version"], info["default_source"]) == ("1.0.0", "explicit")
    resp = client.put("/workflows/variant-calling/default", json={"version": "1.1.0"}, headers=GOOD)
    assert resp.get_json()["previous"] == "1.0.0"
    # Setting the current default again is a no-op that still answers 200.
    resp = client.put("/workflows/variant-calling/default", json={"version": "1.1.0"}, headers=GOOD)
    assert resp.status_code == 200 and resp.get_json()["previous"] == "1.1.0"


def test_default_of_unknown_workflow(client: Any) -> None:
    assert err(client.get("/workflows/ghost/default"))["code"] == "unknown-workflow"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"version": "7.0.0"}, 404, "unknown-version"),
        ({"version": "1.0.0", "extra": 1}, 400, "invalid-request"),
        ({}, 400, "invalid-request"),
        (["1.0.0"], 400, "invalid-request"),
        ({"version": "../1"}, 400, "invalid-name"),
        ({"version": 1}, 400, "invalid-name"),
    ],
)
def test_put_default_refusals(client: Any, body: Any, status: int, code: str) -> None:
    resp = client.put("/workflows/variant-calling/default", json=body, headers=GOOD)
    assert resp.status_code == status
    assert err(resp)["code"] == code


def test_put_default_of_unknown_workflow(client: Any) -> None:
    resp = client.put("/workflows/ghost/default", json={"version": "1.0.0"}, headers=GOOD)
    assert resp.status_code == 404
    assert err(resp)["code"] == "unknown-workflow"


def test_malformed_default_pointer_falls_back_to_highest(client: Any, store: MemoryStore) -> None:
    store.write(default_object("rna-seq"), b"not json", 0)
    body = client.get("/workflows/rna-seq/default").get_json()
    assert (body["version"], body["source"]) == ("2.0.0", "highest")
    store.write(default_object("variant-calling"), b'{"version": "0.0.1"}', 0)
    info = client.get("/workflows/variant-calling").get_json()
    assert (info["default_version"], info["default_source"]) == ("1.1.0", "highest")


# -- conditional requests, HEAD, methods, paths ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/workflows",
        "/workflows/rna-seq",
        "/workflows/rna-seq/versions/2.0.0",
        "/workflows/rna-seq/default",
        "/openapi.json",
        "/healthz",
    ],
)
def test_etag_and_if_none_match(client: Any, path: str) -> None:
    first = client.get(path)
    assert first.status_code == 200
    tag = first.headers["ETag"]
    for inm in (tag, f'"other", {tag}', f"W/{tag}", "*"):
        resp = client.get(path, headers={"If-None-Match": inm})
        assert resp.status_code == 304, inm
        assert resp.data == b""
        assert resp.headers["ETag"] == tag
        assert resp.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert client.get(path, headers={"If-None-Match": '"stale"'}).status_code == 200
    head = client.head(path)
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["ETag"] == tag
    assert int(head.headers["Content-Length"]) == len(first.data)
    assert client.head(path, headers={"If-None-Match": tag}).status_code == 304


def test_etag_is_the_same_across_instances(store: MemoryStore) -> None:
    path = "/workflows/rna-seq/versions/2.0.0"
    tags = {
        Api(Registry(store), StubAuthorizer()).handle(Request.of("GET", path)).headers["ETag"]
        for _ in range(2)
    }
    assert len(tags) == 1


def test_healthz(client: Any) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200


def test_openapi_document(client: Any) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/healthz",
        "/openapi.json",
        "/workflows",
        "/workflows/{workflow}",
        "/workflows/{workflow}/versions/{version}",
        "/workflows/{workflow}/default",
    }


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/workflows", "GET, HEAD"),
        ("DELETE", "/workflows/rna-seq", "GET, HEAD"),
        ("PUT", "/workflows/rna-seq", "GET, HEAD"),
        ("PATCH", "/workflows/rna-seq/versions/2.0.0", "GET, HEAD, PUT"),
        ("DELETE", "/workflows/rna-seq/versions/2.0.0", "GET, HEAD, PUT"),
        ("POST", "/workflows/rna-seq/default", "GET, HEAD, PUT"),
        ("OPTIONS", "/healthz", "GET, HEAD"),
        ("TRACE", "/openapi.json", "GET, HEAD"),
    ],
)
def test_other_methods_are_405_with_allow(client: Any, method: str, path: str, allow: str) -> None:
    resp = client.open(path, method=method)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == allow
    assert err(resp)["code"] == "method-not-allowed"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/workflows/",
        "/workflows/rna-seq/versions",
        "/workflows/rna-seq/versions/2.0.0/extra",
        "/workflows/rna-seq/defaults",
        "/healthz/",
    ],
)
def test_unknown_paths_are_json_404(client: Any, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404
    assert err(resp)["code"] == "not-found"


@pytest.mark.parametrize(
    "path",
    [
        "/workflows/%2e%2e/versions/1.0.0",
        "/workflows/./default",
        "/workflows/rna-seq/versions/%2e%2e",
        "/workflows/r%C3%A9na/versions/1",
        "/workflows/wf%00/versions/1",
        "/workflows/%EF%BC%B7/default",
        "/workflows/a%2Fb/versions/1",
        "/workflows/rna-seq/versions/%FF",
        "/workflows/" + "w" * 101,
        "/workflows/bad%20name",
    ],
)
def test_odd_names_in_urls_are_400_or_404(client: Any, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code in (400, 404), path
    assert err(resp)["code"] in ("invalid-name", "not-found")


def test_invalid_names_say_which_and_why(client: Any) -> None:
    resp = client.get("/workflows/r%C3%A9na/versions/1")
    e = err(resp)
    assert e["code"] == "invalid-name"
    assert "'réna'" in e["message"] and "A-Z a-z 0-9" in e["message"]


# -- registration ------------------------------------------------------------------------------


def test_register_created_then_idempotent_then_conflict(client: Any) -> None:
    url = "/workflows/new-wf/versions/1.0.0"
    doc = spec_doc("new-wf", "1.0.0", "a.txt", "b.txt")
    resp = client.put(url, json=doc, headers=GOOD)
    assert resp.status_code == 201, resp.get_json()
    assert resp.headers["Location"] == url
    assert resp.get_json()["expected_outputs"][0] == {"path": "a.txt", "required": True}
    # Identical content, spelled differently (key order, explicit default): 200.
    same = dict(reversed(list(doc.items())))
    same["expected_outputs"] = [{"required": True, "path": "a.txt"}, {"path": "b.txt"}]
    resp2 = client.put(
        url, data=json.dumps(same), headers={**GOOD, "Content-Type": "application/json"}
    )
    assert resp2.status_code == 200
    assert resp2.headers["ETag"] == resp.headers["ETag"]
    # Different content: 409, and the stored version is unchanged.
    resp3 = client.put(url, json=spec_doc("new-wf", "1.0.0", "c.txt"), headers=GOOD)
    assert resp3.status_code == 409
    assert err(resp3)["code"] == "version-exists"
    assert "immutable" in err(resp3)["message"]
    got = client.get(url).get_json()
    assert [e["path"] for e in got["expected_outputs"]] == ["a.txt", "b.txt"]
    # The new workflow is listed at once by this instance (its own write invalidates lists).
    names = [w["workflow"] for w in client.get("/workflows").get_json()["workflows"]]
    assert "new-wf" in names


def test_terraform_uploaded_spec_registers_idempotently(client: Any) -> None:
    doc = json.loads((ROOT / "workflows/variant-calling/1.0.0.json").read_text())
    resp = client.put("/workflows/variant-calling/versions/1.0.0", json=doc, headers=GOOD)
    assert resp.status_code == 200


def test_body_disagreeing_with_url_is_400(client: Any) -> None:
    doc = spec_doc("other", "2.0.0")
    resp = client.put("/workflows/new-wf/versions/1.0.0", json=doc, headers=GOOD)
    assert resp.status_code == 400
    e = err(resp)
    assert e["code"] == "invalid-spec"
    assert {d["pointer"] for d in e["details"]} == {"/workflow", "/version"}
    assert "disagrees with the URL" in e["details"][0]["message"]


def test_invalid_spec_lists_every_problem(client: Any) -> None:
    doc = {
        "workflow": "new-wf",
        "version": "1.0.0",
        "expected_outputs": [
            {"path": "/abs"},
            {"path": "a/../b"},
            {"path": "output.json"},
            {"pattern": "s/[", "count": 2},
            {"pattern": "s/*"},
            {"path": "x"},
            {"path": "x"},
            {},
        ],
    }
    resp = client.put("/workflows/new-wf/versions/1.0.0", json=doc, headers=GOOD)
    assert resp.status_code == 400
    e = err(resp)
    pointers = [d["pointer"] for d in e["details"]]
    for i, suffix in enumerate(["/path", "/path", "/path", "/pattern", "", "", "/path", ""]):
        if i == 5:
            continue
        assert f"/expected_outputs/{i}{suffix}" in pointers, (i, pointers)
    assert f"{len(e['details'])} problem(s)" in e["message"]


@pytest.mark.parametrize(
    ("data", "ctype", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid-json"),
        (b"", "application/json", 400, "invalid-json"),
        (b'{"a":1,"a":2}', "application/json", 400, "invalid-json"),
        (b"[]", "application/json", 400, "invalid-spec"),
        (b"null", "application/json", 400, "invalid-spec"),
        (b"{}", "text/plain", 415, "unsupported-media-type"),
        (b"{}", "", 415, "unsupported-media-type"),
        (b"{}", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b"{}", "application/json; charset=latin-1", 415, "unsupported-media-type"),
        (b"x" * (1024 * 1024 + 1), "application/json", 413, "payload-too-large"),
    ],
)
def test_bad_bodies(client: Any, data: bytes, ctype: str, status: int, code: str) -> None:
    headers = {**GOOD, **({"Content-Type": ctype} if ctype else {})}
    resp = client.put("/workflows/new-wf/versions/1.0.0", data=data, headers=headers)
    assert resp.status_code == status, resp.get_json()
    assert err(resp)["code"] == code
    assert err(resp)["message"]


def test_body_of_exactly_one_mib_is_read(client: Any) -> None:
    doc = spec_doc("new-wf", "1.0.0")
    data = json.dumps(doc).encode()
    data += b" " * (1024 * 1024 - len(data))
    resp = client.put(
        "/workflows/new-wf/versions/1.0.0",
        data=data,
        headers={**GOOD, "Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 201


def test_oversize_chunked_body_is_413(api: Api) -> None:
    big = b"x" * (2 * 1024 * 1024)
    req = Request(
        "PUT",
        "/workflows/a/versions/1",
        {"authorization": "Bearer good", "content-type": "application/json"},
        lambda n: big[:n],
        None,
    )
    assert api.handle(req).status == 413


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer forged"}, 401),
        ({"Authorization": "Bearer outsider"}, 403),
    ],
)
def test_writes_need_authorisation(client: Any, headers: dict[str, str], status: int) -> None:
    for url, body in (
        ("/workflows/new-wf/versions/1.0.0", spec_doc("new-wf", "1.0.0")),
        ("/workflows/rna-seq/default", {"version": "2.0.0"}),
    ):
        resp = client.put(url, json=body, headers=headers)
        assert resp.status_code == status
    assert client.get("/workflows/new-wf").status_code == 404


def test_concurrent_registrations_one_winner(api: Api) -> None:
    def put(i: int, same: bool) -> int:
        doc = spec_doc("race", "1.0.0", "a.txt" if same else f"f{i}.txt")
        req = Request.of(
            "PUT",
            "/workflows/race/versions/1.0.0",
            {"Authorization": "Bearer good", "Content-Type": "application/json"},
            json.dumps(doc).encode(),
        )
        return api.handle(req).status

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(lambda i: put(i, False), range(16)))
    assert statuses == [201] + [409] * 15
    api2 = Api(Registry(api.registry.store), StubAuthorizer())  # cold caches, like another instance
    doc = spec_doc("race2", "1.0.0")

    def put_same(_: int) -> int:
        req = Request.of(
            "PUT",
            "/workflows/race2/versions/1.0.0",
            {"Authorization": "Bearer good", "Content-Type": "application/json"},
            json.dumps(doc).encode(),
        )
        return (api if _ % 2 else api2).handle(req).status

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(put_same, range(16)))
    assert statuses == [200] * 15 + [201]


# -- caching -----------------------------------------------------------------------------------


def test_versions_are_cached_forever_lists_for_the_ttl(
    api: Api, store: MemoryStore, clock: Clock
) -> None:
    path = "/workflows/rna-seq/versions/2.0.0"
    assert api.handle(Request.of("GET", path)).status == 200
    reads = store.reads
    clock.now += 10_000
    for _ in range(5):
        assert api.handle(Request.of("GET", path)).status == 200
    assert store.reads == reads  # no storage access for a cached version, however old

    assert api.handle(Request.of("GET", "/workflows")).status == 200
    reads = store.reads
    # Another instance registers a version: this one sees it after the TTL, not before.
    seed(store, spec_doc("rna-seq", "3.0.0"))
    body = json.loads(api.handle(Request.of("GET", "/workflows/rna-seq")).body)
    assert body["versions"] == ["2.0.0"]
    assert store.reads == reads
    clock.now += 10.01
    body = json.loads(api.handle(Request.of("GET", "/workflows/rna-seq")).body)
    assert body["versions"] == ["2.0.0", "3.0.0"]
    # A version registered elsewhere is served at once (versions are not negatively cached).
    seed(store, spec_doc("rna-seq", "3.1.0"))
    assert api.handle(Request.of("GET", "/workflows/rna-seq/versions/3.1.0")).status == 200


def test_version_cache_is_bounded(store: MemoryStore) -> None:
    registry = Registry(store, version_cache_size=3)
    for i in range(10):
        seed(store, spec_doc("many", f"1.0.{i}"))
        assert registry.version("many", f"1.0.{i}") is not None
    assert len(registry._versions) == 3


# -- failures ----------------------------------------------------------------------------------


class BrokenStore(MemoryStore):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def read(self, name: str) -> tuple[bytes, int] | None:
        raise self.exc

    def list_names(self, prefix: str) -> list[str]:
        raise self.exc


def test_storage_outage_is_503_and_bugs_are_500_without_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Api(Registry(BrokenStore(StoreError("gs://x down"))), StubAuthorizer())
    resp = api.handle(Request.of("GET", "/workflows"))
    assert resp.status == 503
    assert json.loads(resp.body)["error"]["code"] == "unavailable"

    api = Api(Registry(BrokenStore(KeyError("boom"))), StubAuthorizer())
    resp = api.handle(Request.of("GET", "/workflows/a/versions/1"))
    assert resp.status == 500
    body = json.loads(resp.body)
    assert body["error"]["code"] == "internal"
    assert "Traceback" not in resp.body.decode() and "boom" not in resp.body.decode()
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(e["severity"] == "ERROR" and "Traceback" in e.get("stack_trace", "") for e in logged)


def test_invalid_stored_spec_is_reported_not_served(client: Any, store: MemoryStore) -> None:
    store.write(spec_object("hand", "1.0.0"), b'{"workflow": "hand"}', 0)
    store.write(spec_object("hand", "2.0.0"), json.dumps(spec_doc("hand", "9.0.0")).encode(), 0)
    resp = client.get("/workflows/hand/versions/1.0.0")
    assert resp.status_code == 500
    assert err(resp)["code"] == "invalid-stored-document"
    resp = client.get("/workflows/hand/versions/2.0.0")
    assert any(d["pointer"] == "/version" for d in err(resp)["details"])
    # Registering over it is a conflict, never an overwrite.
    resp = client.put(
        "/workflows/hand/versions/1.0.0", json=spec_doc("hand", "1.0.0"), headers=GOOD
    )
    assert resp.status_code == 409


def test_write_requests_are_logged_without_tokens(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.put("/workflows/logged/versions/1", json=spec_doc("logged", "1"), headers=GOOD)
    client.put("/workflows/logged/versions/1", json=spec_doc("logged", "1"), headers={})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["severity"], e["status"]) for e in lines] == [("INFO", 201), ("WARNING", 401)]
    assert lines[0]["writer"] == WRITER
    assert lines[0]["reconcile"] == "requested"
    assert (lines[0]["workflow"], lines[0]["version"]) == ("logged", "1")
    assert lines[1]["code"] == "missing-token"
    assert all("good" not in json.dumps(e) for e in lines)


def test_missing_config_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from tally_registry.config import Config

    with pytest.raises(ConfigError, match="TALLY_REGISTRY_BUCKET"):
        Config.from_env({"TALLY_REGISTRY_AUDIENCE": "https://r"})
    with pytest.raises(ConfigError, match="TALLY_REGISTRY_AUDIENCE"):
        Config.from_env({"TALLY_REGISTRY_BUCKET": "b"})
    with pytest.raises(ConfigError, match="TALLY_REGISTRY_LIST_TTL_SECONDS"):
        Config.from_env(
            {
                "TALLY_REGISTRY_BUCKET": "b",
                "TALLY_REGISTRY_AUDIENCE": "a",
                "TALLY_REGISTRY_LIST_TTL_SECONDS": "soon",
            }
        )
    cfg = Config.from_env(
        {
            "TALLY_REGISTRY_BUCKET": "b",
            "TALLY_REGISTRY_AUDIENCE": "https://r",
            "TALLY_REGISTRY_WRITERS": " A@x.test, b@x.test ,,",
        }
    )
    assert cfg.writers == frozenset({"a@x.test", "b@x.test"})
    assert cfg.list_ttl == 10.0
    assert cfg.certs_url.startswith("https://www.googleapis.com/")

    monkeypatch.setattr(entry, "_api", None)
    monkeypatch.delenv("TALLY_REGISTRY_BUCKET", raising=False)
    monkeypatch.setenv("TALLY_REGISTRY_AUDIENCE", "https://r")
    with flask_app().test_client() as c:
        resp = c.get("/workflows")
    assert resp.status_code == 500
    assert err(resp)["code"] == "misconfigured"
    assert "TALLY_REGISTRY_BUCKET" in err(resp)["message"]


def test_main_imports_nothing_heavy() -> None:
    """The registry starts cold: its entry point loads no heavy library, and it is deployed
    alone, so it never imports the handler's or the CLI's packages (its settings are its own)."""
    code = (
        "import sys, main, tally_registry.entry, tally_registry.api, tally_registry.config; "
        "heavy = ('flask', 'functions_framework', 'jsonschema', 'google.cloud.storage', "
        "'google.cloud.pubsub', 'google.pubsub', 'google.auth', 'google.oauth2', 'werkzeug', "
        "'requests', 'tally_handler', 'tally_cli'); "
        "print([m for m in sys.modules if m.startswith(heavy)]); "
        "assert callable(main.handle)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "functions" / "registry",
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_entry_builds_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    barrier = threading.Barrier(8)

    def fake_build(env: Any = None) -> str:
        built.append(1)
        return "api"

    monkeypatch.setattr(entry, "_api", None)
    monkeypatch.setattr(entry, "build_api", fake_build)

    def get(_: int) -> Any:
        barrier.wait()
        return entry.get_api()

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(get, range(8))) == {"api"}
    assert built == [1]


def test_reads_import_no_pubsub_even_with_a_topic() -> None:
    """The Pub/Sub client is loaded by the first registration, never by reads."""
    code = (
        "import sys, main; from tally_registry import entry; "
        "from tally_registry.api import Request; "
        "api = entry.build_api({'TALLY_REGISTRY_BUCKET': 'b', 'TALLY_REGISTRY_AUDIENCE': 'a', "
        "'TALLY_PROJECT': 'p', 'TALLY_OBJECT_EVENTS_TOPIC': 't'}); "
        "assert api.reconcile is not None; "
        "assert api.handle(Request.of('GET', '/healthz')).status == 200; "
        "print([m for m in sys.modules if m.startswith(('google.cloud.pubsub', 'google.pubsub'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "functions" / "registry",
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# -- reconcile requests ------------------------------------------------------------------------


def test_registration_requests_a_reconcile_of_the_version(
    client: Any, queue: MemoryReconcileQueue
) -> None:
    url = "/workflows/late/versions/1.0.0"
    resp = client.put(url, json=spec_doc("late", "1.0.0"), headers=GOOD)
    assert (resp.status_code, resp.headers["Tally-Reconcile"]) == (201, "requested")
    assert queue.requests == [("late", "1.0.0")]
    # An identical repeat asks again: it is how a client retries a lost request.
    resp = client.put(url, json=spec_doc("late", "1.0.0"), headers=GOOD)
    assert (resp.status_code, resp.headers["Tally-Reconcile"]) == (200, "requested")
    assert queue.requests == [("late", "1.0.0")] * 2
    refused = [
        client.put(url, json=spec_doc("late", "1.0.0", "other.txt"), headers=GOOD),  # 409
        client.put(url, json=spec_doc("late", "1.0.0", "output.json"), headers=GOOD),  # 400
        client.put("/workflows/late/versions/2", json=spec_doc("late", "2")),  # 401
        client.put("/workflows/late/default", json={"version": "1.0.0"}, headers=GOOD),
    ]
    assert [r.status_code for r in refused] == [409, 400, 401, 200]
    assert all("Tally-Reconcile" not in r.headers for r in refused)
    assert queue.requests == [("late", "1.0.0")] * 2


def test_failed_reconcile_request_keeps_the_registration(
    store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Api(Registry(store), StubAuthorizer(), reconcile=MemoryReconcileQueue(OSError("down")))
    body = json.dumps(spec_doc("late", "1.0.0")).encode()
    resp = api.handle(Request.of("PUT", "/workflows/late/versions/1.0.0", JSON_WRITE, body))
    assert (resp.status, resp.headers["Tally-Reconcile"]) == (201, "scheduled")
    assert api.handle(Request.of("GET", "/workflows/late/versions/1.0.0")).status == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    error = next(e for e in lines if e.get("event") == "registry.reconcile")
    assert error["severity"] == "ERROR"
    assert (error["workflow"], error["version"], error["error"]) == (
        "late",
        "1.0.0",
        "OSError: down",
    )
    assert "next scheduled reconcile" in error["message"]
    assert "tally reconcile --prefix late/1.0.0/" in error["message"]


def test_without_a_topic_registration_says_reconcile_waits(
    store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Api(Registry(store), StubAuthorizer())
    body = json.dumps(spec_doc("late", "1.0.0")).encode()
    resp = api.handle(Request.of("PUT", "/workflows/late/versions/1.0.0", JSON_WRITE, body))
    assert (resp.status, resp.headers["Tally-Reconcile"]) == (201, "scheduled")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    info = next(e for e in lines if e.get("event") == "registry.reconcile")
    assert info["severity"] == "INFO"
    assert "TALLY_OBJECT_EVENTS_TOPIC is empty" in info["message"]


# -- reserved names and path budget from the configuration -------------------------------------


def put_spec(api: Api, doc: dict[str, Any]) -> Any:
    url = f"/workflows/{doc['workflow']}/versions/{doc['version']}"
    return api.handle(Request.of("PUT", url, JSON_WRITE, json.dumps(doc).encode()))


def problems(resp: Any) -> list[dict[str, str]]:
    body = json.loads(resp.body)
    assert (resp.status, body["error"]["code"]) == (400, "invalid-spec"), body
    return body["error"]["details"]


def test_reserved_names_are_the_configured_ones(store: MemoryStore) -> None:
    queue = MemoryReconcileQueue()
    folder = RunFolder("manifest.json", "FAILED.txt")
    api = Api(Registry(store, folder=folder), StubAuthorizer(), reconcile=queue)
    for entry_, needle in [
        ({"path": "manifest.json"}, "manifest"),
        ({"path": "FAILED.txt"}, "failure marker"),
        ({"pattern": "*.json", "count": 1}, "'manifest.json'"),
        ({"pattern": "FAILED.*", "count": 1}, "'FAILED.txt'"),
        ({"path": "_tally/list.json"}, "under '_tally/'"),
    ]:
        doc = {"workflow": "wf", "version": "1", "expected_outputs": [entry_]}
        found = problems(put_spec(api, doc))
        assert any(needle in p["message"] for p in found), (entry_, found)
    # The defaults are ordinary names under another configuration.
    doc = spec_doc("wf", "1", "output.json", "_FAILED")
    assert put_spec(api, doc).status == 201
    assert queue.requests == [("wf", "1")]


@pytest.mark.parametrize("name", ["_tally", "_tally/"])
def test_a_path_named_like_the_tally_folder_is_named_accurately(api: Api, name: str) -> None:
    found = problems(put_spec(api, spec_doc("wf", "1", name)))
    messages = [p["message"] for p in found]
    assert any("tally's reserved folder" in m for m in messages), messages
    assert not any("is under" in m for m in messages), messages


def test_workflow_named_tally_is_refused(api: Api, queue: MemoryReconcileQueue) -> None:
    found = problems(put_spec(api, spec_doc("_tally", "1")))
    assert [p["pointer"] for p in found] == ["/workflow"]
    assert "bucket" in found[0]["message"] and "another name" in found[0]["message"]
    assert queue.requests == []


def test_paths_fit_in_an_object_name_under_the_layout(store: MemoryStore) -> None:
    api = Api(Registry(store), StubAuthorizer(), reconcile=MemoryReconcileQueue())
    budget = 1024 - len("wf/1/x/")  # workflow, version and a 1-byte run id
    assert put_spec(api, spec_doc("wf", "1", "a" * budget)).status == 201
    found = problems(put_spec(api, spec_doc("wf", "2", "a" * (budget + 1))))
    assert f"fit in {budget}" in found[0]["message"]
    # UTF-8 bytes count, not characters: 510 'é' are 1,020 bytes.
    assert problems(put_spec(api, spec_doc("wf", "3", "é" * 510)))
    # A longer version name leaves fewer bytes; a pattern too long to match anything is refused.
    long_version = "v" * 100
    found = problems(put_spec(api, spec_doc("wf", long_version, "a" * budget)))
    assert f"fit in {budget - 99}" in found[0]["message"]
    doc = {
        "workflow": "wf",
        "version": long_version,
        "expected_outputs": [{"pattern": "**/" + "a" * (budget - 99) + "?", "count": 1}],
    }
    assert "at least" in problems(put_spec(api, doc))[0]["message"]
    runs = RunFolder(layout=RunLayout.parse("runs/{workflow}/{version}/{run_id}/{path}"))
    api = Api(Registry(store, folder=runs), StubAuthorizer(), reconcile=MemoryReconcileQueue())
    found = problems(put_spec(api, spec_doc("wf", "4", "a" * budget)))
    assert f"fit in {budget - len('runs/')}" in found[0]["message"]


def test_stored_spec_at_odds_with_the_configuration_is_served_with_a_warning(
    store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store, spec_doc("old", "1", "manifest.json"))
    api = Api(Registry(store, folder=RunFolder("manifest.json")), StubAuthorizer())
    assert api.handle(Request.of("GET", "/workflows/old/versions/1")).status == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["severity"] for e in lines] == ["WARNING"]
    assert "new version" in lines[0]["message"]
    assert lines[0]["details"][0]["pointer"] == "/expected_outputs/0/path"
