"""Adapter from the werkzeug request functions-framework passes to the pure API, and back.

The API (store, caches, authorizer) is built on the first request from the environment, so that
importing the function costs only this package's light modules.
"""

from __future__ import annotations

import threading
from typing import Any

from tally_registry.api import Api, Request, error_response
from tally_registry.auth import IdTokenAuthorizer
from tally_registry.config import Config
from tally_registry.errors import ConfigError, api_error
from tally_registry.log import log
from tally_registry.reconcile import PubSubReconcileQueue
from tally_registry.registry import Registry
from tally_registry.store import GcsStore

__all__ = ["build_api", "get_api", "handle", "to_request"]

_api: Api | None = None
_lock = threading.Lock()


def build_api(env: Any = None) -> Api:
    """The API wired to Cloud Storage, Pub/Sub and Google ID tokens, configured from `env`."""
    config = Config.from_env() if env is None else Config.from_env(env)
    store = GcsStore(config.bucket, emulator_host=config.emulator_host, project=config.project)
    registry = Registry(store, list_ttl=config.list_ttl, folder=config.run_folder)
    authorizer = IdTokenAuthorizer(config.audience, config.certs_url, config.writers)
    reconcile = None
    if config.object_events_topic and config.project:
        reconcile = PubSubReconcileQueue(config.project, config.object_events_topic, config.layout)
    return Api(registry, authorizer, reconcile=reconcile)


def get_api() -> Api:
    global _api  # noqa: PLW0603 - one API per instance, built on first use
    if _api is None:
        with _lock:
            if _api is None:
                _api = build_api()
    return _api


def _reader(request: Any) -> Any:
    def read(limit: int) -> bytes:
        stream = request.stream
        chunks, size = [], 0
        while size < limit:  # a WSGI stream may return fewer bytes than asked
            chunk = stream.read(min(limit - size, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    return read


def to_request(request: Any) -> Request:
    return Request(
        method=request.method.upper(),
        path=request.path,
        headers={k.lower(): v for k, v in request.headers.items()},
        read_body=_reader(request),
        content_length=request.content_length,
    )


def handle(request: Any) -> tuple[bytes, int, dict[str, str]]:
    """HTTP entry point: a werkzeug/Flask request in, a (body, status, headers) tuple out."""
    try:
        api = get_api()
    except ConfigError as exc:
        log("ERROR", f"registry misconfigured: {exc}", event="registry.config")
        resp = error_response(api_error(exc))
        return resp.body, resp.status, resp.headers
    resp = api.handle(to_request(request))
    return resp.body, resp.status, resp.headers
