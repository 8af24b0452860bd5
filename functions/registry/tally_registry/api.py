"""HTTP API as a pure function of a plain Request: routing, conditional GETs, errors, logging.

No web framework here: the entry point adapts the werkzeug request functions-framework passes.
HEAD responses carry the GET body; the WSGI layer drops it and keeps Content-Length right.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tally_registry import spec as specs
from tally_registry.auth import Authorizer
from tally_registry.errors import ApiError, JsonError, RegistryError, StoreError, api_error
from tally_registry.log import log
from tally_registry.reconcile import ReconcileQueue
from tally_registry.registry import Registry, VersionDoc, WorkflowInfo, etag_of

__all__ = [
    "IMMUTABLE",
    "JSON_TYPE",
    "MAX_BODY_BYTES",
    "NO_STORE",
    "OPENAPI_PATH",
    "READ",
    "READ_WRITE",
    "RECONCILE_HEADER",
    "Api",
    "Handler",
    "Request",
    "Response",
    "Route",
    "error_response",
]

MAX_BODY_BYTES = 1024 * 1024
JSON_TYPE = "application/json"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"
READ = ("GET", "HEAD")
READ_WRITE = ("GET", "HEAD", "PUT")
# On a registration: "requested" (the version's runs are being reconciled) or "scheduled" (runs
# already complete wait for the next scheduled reconcile: requests are off or failed).
RECONCILE_HEADER = "Tally-Reconcile"

Handler = Callable[["Request"], "Response"]
Route = tuple[tuple[str, ...], Handler, Handler | None]


def _no_body(_limit: int) -> bytes:
    return b""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    read_body: Callable[[int], bytes] = _no_body  # reads at most n bytes of the body
    content_length: int | None = None

    @classmethod
    def of(
        cls,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Request:
        """A request with an in-memory body (tests, benchmarks)."""
        return cls(
            method.upper(),
            path,
            {k.lower(): v for k, v in (headers or {}).items()},
            lambda n: body[:n],
            len(body) if body else None,
        )


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]
    error_code: str = ""  # for the log line; not sent


def _json(doc: Any) -> bytes:
    return specs.canonical_json(doc)


def error_response(err: ApiError) -> Response:
    headers = {"Content-Type": JSON_TYPE, "Cache-Control": NO_STORE, **err.headers}
    return Response(err.status, _json(err.to_json()), headers, err.code)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == bare for t in if_none_match.split(","))


def _bad_name(kind: str, name: str) -> ApiError:
    return ApiError(
        400,
        "invalid-name",
        f"{kind} name {name!r} is invalid: use 1-100 characters from A-Z a-z 0-9 . _ - "
        "(not '.' or '..')",
        [{"pointer": f"/{kind}", "message": "invalid name", "value": name}],
    )


def _unknown_workflow(workflow: str) -> ApiError:
    return ApiError(
        404,
        "unknown-workflow",
        f"unknown workflow {workflow!r}: GET /workflows lists the registered workflows; "
        f"register one with PUT /workflows/{workflow}/versions/<version>",
        [{"workflow": workflow}],
    )


def _unknown_version(info: WorkflowInfo, version: str) -> ApiError:
    return ApiError(
        404,
        "unknown-version",
        f"workflow {info.workflow!r} has no version {version!r} "
        f"(known: {', '.join(info.versions)}): register it with "
        f"PUT /workflows/{info.workflow}/versions/{version}",
        [{"workflow": info.workflow, "version": version, "known_versions": list(info.versions)}],
    )


class Api:
    def __init__(
        self,
        registry: Registry,
        authorizer: Authorizer,
        *,
        reconcile: ReconcileQueue | None = None,
        openapi_path: Path = OPENAPI_PATH,
    ) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.reconcile = reconcile  # None: TALLY_OBJECT_EVENTS_TOPIC is empty
        self.openapi_path = openapi_path
        self._openapi: tuple[bytes, str] | None = None
        ttl = int(registry.list_ttl)
        self.short_cache = f"public, max-age={ttl}" if ttl > 0 else "no-cache"

    # -- entry -----------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        started = time.perf_counter()
        writer: list[str] = []  # set by writes once authorised, for the log line
        try:
            resp = self._route(req, writer)
        except Exception as exc:  # answered as errors.ANSWER says; never a trace in a response
            err = api_error(exc)
            if err.status >= 500:
                self._log_failure(req, exc)
            resp = error_response(err)
        if req.method not in READ or resp.status >= 500:
            self._log_request(req, resp, started, writer)
        return resp

    @staticmethod
    def _log_failure(req: Request, exc: Exception) -> None:
        where = {"method": req.method, "path": req.path}
        if isinstance(exc, RegistryError):  # Storage, or an object written around the API
            log("ERROR", exc.message, **where, **({"details": exc.details} if exc.details else {}))
        else:  # a bug: the log has the trace
            message = f"unhandled {type(exc).__name__} on {req.method} {req.path}"
            log("ERROR", message, **where, stack_trace=traceback.format_exc())

    @staticmethod
    def _log_request(req: Request, resp: Response, started: float, writer: list[str]) -> None:
        severity = "ERROR" if resp.status >= 500 else "WARNING" if resp.status >= 400 else "INFO"
        parts = req.path.split("/")
        fields: dict[str, Any] = {
            "event": "registry.request",
            "method": req.method,
            "path": req.path,
            "status": resp.status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if len(parts) > 2 and parts[1] == "workflows":
            fields["workflow"] = parts[2]
        if len(parts) > 4 and parts[3] == "versions":
            fields["version"] = parts[4]
        if writer:
            fields["writer"] = writer[0]
        if resp.error_code:
            fields["code"] = resp.error_code
        if RECONCILE_HEADER in resp.headers:
            fields["reconcile"] = resp.headers[RECONCILE_HEADER]
        log(severity, f"{req.method} {req.path} -> {resp.status}", **fields)

    # -- routing ---------------------------------------------------------------------------

    def _route(self, req: Request, writer: list[str]) -> Response:
        parts = tuple(req.path.split("/")[1:]) if req.path.startswith("/") else ()
        target = self._match(parts)
        if target is None:
            raise ApiError(
                404,
                "not-found",
                f"no such endpoint: {req.path!r}; GET /openapi.json describes the API",
            )
        methods, read, write = target
        self._allow(req, methods)
        if req.method == "PUT" and write is not None:
            writer.append(self.authorizer.authorize(req.headers.get("authorization")))
            return write(req)
        return read(req)

    def _match(self, parts: tuple[str, ...]) -> Route | None:
        """The route of a path: its methods, GET handler and PUT handler (names validated)."""
        fixed: dict[tuple[str, ...], Route] = {
            ("healthz",): (READ, self._health, None),
            ("openapi.json",): (READ, self._openapi_doc, None),
            ("workflows",): (READ, self._list, None),
        }
        if parts in fixed:
            return fixed[parts]
        if len(parts) < 2 or parts[0] != "workflows" or "" in parts:
            return None  # an empty segment ("/workflows/", "a//b") is no resource
        workflow = parts[1]
        match parts[2:]:
            case ():
                w = self._name("workflow", workflow)
                return READ, lambda r: self._get_workflow(r, w), None
            case ("default",):
                w = self._name("workflow", workflow)
                return (
                    READ_WRITE,
                    lambda r: self._get_default(r, w),
                    lambda r: self._put_default(r, w),
                )
            case ("versions", version):
                w, v = self._name("workflow", workflow), self._name("version", version)
                return (
                    READ_WRITE,
                    lambda r: self._get_version(r, w, v),
                    lambda r: self._put_version(r, w, v),
                )
        return None

    @staticmethod
    def _allow(req: Request, methods: tuple[str, ...]) -> None:
        if req.method not in methods:
            raise ApiError(
                405,
                "method-not-allowed",
                f"{req.method} is not allowed here: use {', '.join(methods)}",
                headers={"Allow": ", ".join(methods)},
            )

    @staticmethod
    def _name(kind: str, name: str) -> str:
        if not specs.is_valid_name(name):
            raise _bad_name(kind, name)
        return name

    # -- responses -------------------------------------------------------------------------

    def _ok(
        self,
        req: Request,
        doc: Any,
        cache_control: str,
        *,
        body: bytes | None = None,
        tag: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Response:
        """200 with an ETag, or 304 when If-None-Match holds it."""
        body = _json(doc) if body is None else body
        tag = tag or etag_of(body)
        headers = {"Cache-Control": cache_control, "ETag": tag, **(extra or {})}
        inm = req.headers.get("if-none-match")
        if inm and _etag_matches(inm, tag):
            return Response(304, b"", headers)
        return Response(200, body, {"Content-Type": JSON_TYPE, **headers})

    def _openapi_doc(self, req: Request) -> Response:
        if self._openapi is None:
            body = self.openapi_path.read_bytes()
            self._openapi = (body, etag_of(body))
        body, tag = self._openapi
        return self._ok(req, None, "public, max-age=300", body=body, tag=tag)

    # -- reads -----------------------------------------------------------------------------

    def _health(self, req: Request) -> Response:
        return self._ok(req, {"status": "ok"}, NO_STORE)

    def _list(self, req: Request) -> Response:
        infos = self.registry.workflows()
        return self._ok(req, {"workflows": [i.to_json() for i in infos]}, self.short_cache)

    def _get_workflow(self, req: Request, workflow: str) -> Response:
        info = self.registry.workflow(workflow)
        if info is None:
            raise _unknown_workflow(workflow)
        return self._ok(req, info.to_json(), self.short_cache)

    def _get_version(self, req: Request, workflow: str, version: str) -> Response:
        doc = self.registry.version(workflow, version)
        if doc is None:
            info = self.registry.workflow(workflow)
            raise _unknown_workflow(workflow) if info is None else _unknown_version(info, version)
        return self._ok(req, None, IMMUTABLE, body=doc.body, tag=doc.etag)

    def _get_default(self, req: Request, workflow: str) -> Response:
        info = self.registry.workflow(workflow)
        if info is None:
            raise _unknown_workflow(workflow)
        doc = self.registry.version(workflow, info.default_version)
        if doc is None:  # listed a moment ago, gone now: only a bucket edit does that
            raise StoreError(f"{workflow} {info.default_version} was listed but cannot be read")
        body = {
            "workflow": workflow,
            "version": doc.version,
            "source": info.default_source,
            "spec": doc.spec,
        }
        location = f"/workflows/{quote(workflow)}/versions/{quote(doc.version)}"
        return self._ok(req, body, self.short_cache, extra={"Content-Location": location})

    # -- writes ----------------------------------------------------------------------------

    def _read_json(self, req: Request) -> Any:
        """The request's JSON body: 415 unless JSON, 413 over 1 MiB, 400 unless strict JSON."""
        media_type, _, params = req.headers.get("content-type", "").partition(";")
        media_type = media_type.strip().lower()
        if not (
            media_type == JSON_TYPE
            or (media_type.startswith("application/") and media_type.endswith("+json"))
        ):
            raise ApiError(
                415,
                "unsupported-media-type",
                f"the body must be JSON: send 'Content-Type: application/json' "
                f"(got {media_type or 'no Content-Type'!r})",
            )
        charset = params.strip().lower().removeprefix("charset=").strip('"')
        if params.strip().lower().startswith("charset=") and charset not in ("utf-8", "utf8"):
            raise ApiError(
                415, "unsupported-media-type", f"charset {charset!r}: send the JSON as UTF-8"
            )
        too_large = ApiError(
            413,
            "payload-too-large",
            f"the body exceeds {MAX_BODY_BYTES} bytes (1 MiB): a spec should be far smaller; "
            "use patterns with counts for many outputs",
        )
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise too_large
        data = req.read_body(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise too_large
        if not data.strip():
            raise ApiError(400, "invalid-json", "the body is empty: send a JSON document")
        try:
            return specs.loads_strict(data)
        except JsonError as exc:
            raise JsonError(exc.message, [{"pointer": "", "message": exc.message}]) from None

    def _put_version(self, req: Request, workflow: str, version: str) -> Response:
        doc = self._read_json(req)
        problems = specs.validate(doc, self.registry.folder)
        if isinstance(doc, dict):
            for kind, expected in (("workflow", workflow), ("version", version)):
                if kind in doc and doc[kind] != expected:
                    problems.append(
                        {
                            "pointer": f"/{kind}",
                            "message": f"the body's {kind} {doc[kind]!r} disagrees with the URL's "
                            f"{expected!r}: make them equal",
                        }
                    )
        if problems:
            problems = specs.sort_problems(problems)
            raise ApiError(
                400,
                "invalid-spec",
                f"the spec has {len(problems)} problem(s), listed in details with JSON "
                "pointers: fix them all and PUT again",
                problems,
            )
        created, stored = self.registry.register(specs.normalize(doc))  # or VersionConflict
        # Also on an identical repeat (200): a retry then re-requests a reconcile that failed or
        # was lost to a crash after the write; reconciling a version twice is harmless.
        reconcile = self._request_reconcile(workflow, version)
        return self._written(created, stored, reconcile)

    def _request_reconcile(self, workflow: str, version: str) -> str:
        """Ask for a reconcile of the version's runs; the RECONCILE_HEADER value. Never raises:
        the spec is stored, and a registration must not fail for want of a reconcile."""
        fields = {"event": "registry.reconcile", "workflow": workflow, "version": version}
        prefix = self.registry.folder.layout.version_prefix(workflow, version)
        later = "its runs already complete are announced at the next scheduled reconcile" + (
            f" (or now: tally reconcile --prefix {prefix})" if prefix else ""
        )
        if self.reconcile is None:
            log(
                "INFO",
                f"registered {workflow} {version}: reconcile requests are off "
                f"(TALLY_OBJECT_EVENTS_TOPIC is empty); {later}",
                **fields,
            )
            return "scheduled"
        try:
            self.reconcile.request(workflow, version)
        except Exception as exc:  # whatever fails here, the registration stands
            log(
                "ERROR",
                f"registered {workflow} {version}, but its reconcile request failed: {later}",
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
                **fields,
            )
            return "scheduled"
        return "requested"

    @staticmethod
    def _written(created: bool, doc: VersionDoc, reconcile: str) -> Response:
        location = f"/workflows/{quote(doc.workflow)}/versions/{quote(doc.version)}"
        headers = {
            "Content-Type": JSON_TYPE,
            "Cache-Control": NO_STORE,
            "ETag": doc.etag,
            "Location": location,
            RECONCILE_HEADER: reconcile,
        }
        return Response(201 if created else 200, doc.body, headers)

    def _put_default(self, req: Request, workflow: str) -> Response:
        body = self._read_json(req)
        if not isinstance(body, dict) or set(body) != {"version"}:
            raise ApiError(
                400,
                "invalid-request",
                'the body must be {"version": "<registered version>"} and nothing else',
                [{"pointer": "", "message": "expected an object with exactly 'version'"}],
            )
        version = body["version"]
        if not isinstance(version, str) or not specs.is_valid_name(version):
            raise _bad_name("version", str(version))
        if self.registry.version(workflow, version) is None:
            info = self.registry.workflow(workflow)
            raise _unknown_workflow(workflow) if info is None else _unknown_version(info, version)
        previous = self.registry.set_default(workflow, version)  # or DefaultConflict
        doc = {"workflow": workflow, "version": version, "source": "explicit", "previous": previous}
        return Response(200, _json(doc), {"Content-Type": JSON_TYPE, "Cache-Control": NO_STORE})
