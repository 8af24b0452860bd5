"""Rendering: JSON on stdout for scripts (`--json`), rich tables for people; progress and errors
on stderr so that stdout stays parseable."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["cell", "emit_json", "err", "error", "out", "progress", "table"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)


_ISO_FRACTION = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+Z$")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    fraction = _ISO_FRACTION.match(text)
    return fraction.group(1) + "Z" if fraction else text  # tables show whole seconds


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    if not rows:
        out.print(f"{title + ': ' if title else ''}no rows")
        return
    view = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(cell(row.get(c)) for c in columns), style=None)
    out.print(view)


@contextmanager
def progress(description: str, total: int | None, enabled: bool) -> Iterator[Any]:
    """A progress bar on stderr, only for people at a terminal."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}" + ("/{task.total}" if total else "")),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled or not err.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def update(completed: int | None = None, advance: int = 0) -> None:
            if completed is not None:
                bar.update(task, completed=completed)
            elif advance:
                bar.advance(task, advance)

        yield update
