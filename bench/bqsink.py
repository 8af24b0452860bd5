"""A BigQuery REST endpoint that only keeps streamed rows: the full benchmark's event log.

bqemulator keeps about 0.7 MB of memory per single-row streaming insert (measured: 600 inserts
of an events row grow it by ~440 MB, and by ~2 MB per delivery over the benchmark's runs), and
its insert latency grows with it; the ~15,000 deliveries of a full benchmark run would need more
than 10 GB on a machine other sessions share. The full run therefore points the platform's
`TALLY_BIGQUERY_ENDPOINT` (the Stack honours an external one) at this sink: it accepts the
dataset, table and view creations of devstack.resources and keeps every `insertAll` row exactly
as the handler sent it (deduplicated by insertId, as BigQuery does), for the driver to sum the
same columns the events table has. The quick run (`make test`) keeps bqemulator and SQL.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devstack.tap import QuietHandler


class BigQuerySink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # table -> id -> row
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="bq-sink")
        self._thread.daemon = True

    def __enter__(self) -> BigQuerySink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Rows of a table by its id (e.g. "events")."""
        with self._lock:
            return list(self._rows[table].values())

    def _insert(self, table: str, body: dict[str, Any]) -> None:
        with self._lock:
            stored = self._rows[table]
            for index, row in enumerate(body.get("rows") or []):
                stored[row.get("insertId") or f"auto-{len(stored)}-{index}"] = row["json"]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(QuietHandler):
            def _reply(self, document: dict[str, Any]) -> None:
                payload = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._reply({"kind": "bigquery#datasetList", "datasets": []})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?", 1)[0]
                if path.endswith("/insertAll"):
                    sink._insert(path.rsplit("/", 2)[-2], body)
                    self._reply({"kind": "bigquery#tableDataInsertAllResponse"})
                else:  # a dataset, table or view creation: echo it as created
                    self._reply(body)

        return Handler
