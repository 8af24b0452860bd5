"""Cloud Functions entry point of tally's event handler (`--entry-point=handle`).

An HTTP function: the Pub/Sub push subscription POSTs its envelope here, and Eventarc users may
send CloudEvents. It reads the body itself, so that no delivery is refused before it is logged.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tally_handler.app import App
from tally_handler.config import Config
from tally_handler.errors import ConfigError, outcome_of

_app: App | None = None


def _get_app() -> App:
    global _app  # noqa: PLW0603 (one App per instance, built at the first request)
    if _app is None:
        _app = App(Config.from_env(os.environ))
    return _app


def handle(request: Any) -> tuple[str, int, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if request.method == "GET" and request.path.rstrip("/") == "/healthz":
        return '{"status": "ok"}', 200, headers
    if request.method != "POST":
        return '{"error": "POST a Pub/Sub push envelope or a CloudEvent"}', 405, headers
    try:
        app = _get_app()
    except ConfigError as exc:  # every missing variable is named; Pub/Sub retries meanwhile
        print(json.dumps({"severity": "CRITICAL", "message": str(exc)}), flush=True)
        status = 200 if outcome_of(exc).acknowledged else 503  # deferred: 503
        return json.dumps({"error": str(exc)}), status, headers
    status, body = app.handle(request.get_data(cache=False), dict(request.headers))
    return json.dumps(body), status, headers
