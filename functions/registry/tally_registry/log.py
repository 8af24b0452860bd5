"""Structured logs: one JSON object per line on stdout, with `severity` (Cloud Logging reads it).

Never pass tokens or request bodies here.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

__all__ = ["log"]

_lock = threading.Lock()


def log(severity: str, message: str, **fields: Any) -> None:
    entry = {"severity": severity, "message": message, "component": "registry", **fields}
    line = json.dumps(entry, default=str, ensure_ascii=False) + "\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()
