"""The event log in BigQuery: the views, the documented queries (bigquery/queries/*.sql) and the
few queries the commands need. Every value reaches BigQuery as a named query parameter."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tally_cli.clients import Clients, dependency
from tally_cli.errors import ConfigError

__all__ = [
    "PARAM_TYPES",
    "QUERIES_DIR",
    "EventLog",
    "Param",
    "Query",
    "catalogue",
    "parse_query",
    "plain",
]

# Installed, the queries ship inside the package (pyproject.toml maps bigquery/queries there);
# in a checkout they are read where they are written.
_PACKAGED = Path(__file__).resolve().parent / "queries"
QUERIES_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parent.parent / "bigquery" / "queries"
PARAM_TYPES = ("STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP")
# `-- @param NAME TYPE [= DEFAULT]  description`: a parameter the query file declares.
_PARAM = re.compile(
    r"^--\s*@param\s+(?P<name>[A-Za-z_]\w*)\s+(?P<type>[A-Z0-9]+)"
    r"(?:\s*=\s*(?P<default>'[^']*'|\S+))?\s*(?P<help>.*)$"
)
_TITLE = re.compile(r"^--\s*(?P<name>[\w-]+):\s*(?P<help>.+)$")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str | None  # None: required
    help: str

    def convert(self, text: str) -> Any:
        """The value of `text` for this parameter; ConfigError (usage) when it is not one."""
        try:
            if self.type == "INT64":
                return int(text)
            if self.type == "FLOAT64":
                return float(text)
            if self.type == "BOOL":
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                return text.lower() == "true"
            if self.type == "TIMESTAMP":
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
                return value if value.tzinfo else value.replace(tzinfo=UTC)
        except ValueError:
            raise ConfigError(
                f"parameter {self.name} must be {self.type.lower()}, got {text!r}"
            ) from None
        return text


@dataclass(frozen=True)
class Query:
    name: str
    path: Path
    description: str
    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def bind(self, given: dict[str, str]) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(
                f"query {self.name} has no parameter {', '.join(unknown)}; "
                f"its parameters: {', '.join(known) or 'none'}"
            )
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in given:
                values[param.name] = param.convert(given[param.name])
            elif param.default is None:
                raise ConfigError(
                    f"query {self.name} needs --param {param.name}=<{param.type.lower()}>"
                    f" ({param.help})"
                )
            else:
                values[param.name] = param.convert(param.default)
        return values


def parse_query(path: Path) -> Query:
    """A documented query file: a title line `-- name: what it answers`, then `@param` lines."""
    description, params = "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        param = _PARAM.match(line)
        if param:
            if param["type"] not in PARAM_TYPES:
                raise ValueError(f"{path}: parameter {param['name']}: unknown type {param['type']}")
            default = param["default"]
            if default is not None and default.startswith("'"):
                default = default[1:-1]
            params.append(Param(param["name"], param["type"], default, param["help"].strip()))
            continue
        title = _TITLE.match(line)
        if title and not description:
            description = title["help"].strip()
    return Query(path.stem, path, description, tuple(params))


def catalogue(directory: Path = QUERIES_DIR) -> dict[str, Query]:
    return {path.stem: parse_query(path) for path in sorted(directory.glob("*.sql"))}


def _bq_param(name: str, value: Any) -> Any:
    from google.cloud import bigquery

    if isinstance(value, list):
        return bigquery.ArrayQueryParameter(name, "STRING", [str(v) for v in value])
    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, datetime):
        kind = "TIMESTAMP"
    else:
        kind = "STRING"
    return bigquery.ScalarQueryParameter(name, kind, value)


def plain(value: Any) -> Any:
    """A BigQuery value as JSON has it (timestamps as RFC 3339 UTC)."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


class EventLog:
    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.settings = clients.settings

    def run(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL (`${dataset}` = project.dataset) with named parameters; rows as plain dicts."""
        from google.cloud import bigquery

        sql = sql.replace("${dataset}", self.settings.dataset_ref)
        config = bigquery.QueryJobConfig(
            query_parameters=[_bq_param(k, v) for k, v in (params or {}).items()]
        )
        timeout = self.settings.timeout
        with dependency(self.settings, "BigQuery"):
            client = self.clients.bigquery()
            retry = self.clients.retry()
            # job_retry=None: the default re-runs a failing job for 10 minutes.
            job = client.query(sql, job_config=config, retry=retry, timeout=timeout, job_retry=None)
            rows = job.result(timeout=timeout, retry=retry, job_retry=None)
            return [{k: plain(v) for k, v in row.items()} for row in rows]

    def documented(self, query: Query, given: dict[str, str]) -> list[dict[str, Any]]:
        return self.run(query.sql, query.bind(given))

    def run_status(self, workflow: str, version: str, run_id: str) -> dict[str, Any] | None:
        rows = self.run(
            "SELECT * FROM `${dataset}.run_status`"
            " WHERE workflow = @workflow AND version = @version AND run_id = @run_id",
            {"workflow": workflow, "version": version, "run_id": run_id},
        )
        return rows[0] if rows else None

    def history(self, workflow: str, version: str, run_id: str) -> list[dict[str, Any]]:
        query = catalogue()["run_history"]
        return self.documented(query, {"run_id": run_id, "workflow": workflow, "version": version})

    def runs(
        self,
        states: list[str],
        since_seconds: int | None,
        workflow: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        where, params = ["TRUE"], {"limit": limit}
        if states:
            where.append("state IN UNNEST(@states)")
            params["states"] = list(states)
        if since_seconds is not None:
            where.append(
                "COALESCE(last_received_time, announced_time)"
                " >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @since SECOND)"
            )
            params["since"] = since_seconds
        if workflow:
            where.append("workflow = @workflow")
            params["workflow"] = workflow
        # Only fixed fragments above enter the SQL text; every value is a query parameter.
        sql = (
            "SELECT workflow, version, run_id, state, revision, first_event_time,"  # noqa: S608
            " last_received_time, deliveries, outputs_seen, unexpected_seen, outputs_in_manifest,"
            " announced_time,"
            " completion_seconds, stalled_detail FROM `${dataset}.run_status`"
            f" WHERE {' AND '.join(where)}"
            " ORDER BY COALESCE(last_received_time, announced_time) DESC,"
            " workflow, version, run_id LIMIT @limit"
        )
        return self.run(sql, params)
