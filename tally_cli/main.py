"""The `tally` command line.

Exit codes (errors.EXIT_STATUS):
  0  success
  1  a check failed: the run is not found (or not COMPLETE with --require-complete), a spec was
     refused (conflict, invalid, unauthorized), a workflow is unknown
  2  usage: bad arguments or missing configuration
  3  a dependency failed or is unreachable: registry, Storage, Pub/Sub, BigQuery

Configuration: flags, then environment variables (config.SETTINGS; docs/design.md, "Command
line"), then .devstack/env (written by `make run`), then defaults (Terraform's names).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tally_cli import config, output
from tally_cli.clients import Clients
from tally_cli.errors import EXIT_CHECK_FAILED, ConfigError, TallyError, exit_status

__all__ = [
    "EMPTY",
    "F",
    "JsonFlag",
    "app",
    "check",
    "command",
    "main",
    "parse_duration",
    "query",
    "reconcile",
    "register",
    "replay",
    "runs",
    "status",
    "workflow",
    "workflows",
]

app = typer.Typer(
    name="tally",
    help="Operate tally: workflow specs, run status, the event log, reconciliation, replay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, for scripts.")]
F = TypeVar("F", bound=Callable[..., Any])
_DURATION = re.compile(r"(\d+)([smhdw])")
EMPTY = "''"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def command(func: F) -> F:
    """Expected failures become one line on stderr and their exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TallyError as exc:
            output.error(str(exc))
            raise typer.Exit(exit_status(exc)) from None
        except KeyboardInterrupt as exc:
            output.error("interrupted")
            raise typer.Exit(exit_status(exc)) from None

    return wrapper  # type: ignore[return-value]


def _settings(ctx: typer.Context) -> config.Settings:
    return ctx.ensure_object(dict)["settings"]


def _clients(ctx: typer.Context) -> Clients:
    return Clients(_settings(ctx))


def parse_duration(text: str) -> int:
    """`90s`, `30m`, `2h`, `7d`, `1w`, `1h30m` -> seconds."""
    text = text.strip().lower()
    if not text or _DURATION.sub("", text):
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 30m, 2h, 7d or 1h30m")
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


# Typer declares options in each command's signature, so the option declarations below and in
# the commands share one shape; what they say differs.
@app.callback()
def main(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Project (TALLY_PROJECT).")] = None,
    dataset: Annotated[str | None, typer.Option(help="BigQuery dataset (TALLY_DATASET).")] = None,
    registry_url: Annotated[
        str | None, typer.Option(help="Registry base URL (TALLY_REGISTRY_URL).")
    ] = None,
    bucket: Annotated[
        str | None, typer.Option(help="Outputs bucket (TALLY_OUTPUTS_BUCKET).")
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(help="Read settings from this file (default: .devstack/env if present)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for any one dependency call.  [default: 30]"),
    ] = None,
) -> None:
    """Operate tally: workflow specs, run status, the event log, reconciliation, replay.

    Exit codes: 0 ok, 1 a check failed, 2 usage or configuration, 3 a dependency unreachable.
    """
    flags = {
        "project": project,
        "dataset": dataset,
        "registry_url": registry_url,
        "outputs_bucket": bucket,
        "timeout": timeout,
    }
    try:
        settings = config.load(flags, env_file=env_file)
    except TallyError as exc:
        output.error(str(exc))
        raise typer.Exit(exit_status(exc)) from None
    ctx.ensure_object(dict)["settings"] = settings


# -- registry ----------------------------------------------------------------------------------


@app.command()
@command
def register(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="Spec files (or folders of them): workflows/<w>/<v>.json.")
    ],
    token: Annotated[
        str | None,
        typer.Option(
            help="ID token for the registry (TALLY_REGISTRY_TOKEN; default: google-auth)."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Register workflow versions (PUT to the registry); idempotent: unchanged specs are fine.

    Exit 1 when any spec is refused (conflict with a registered version, invalid, unauthorized).
    """
    from tally_cli.registry import Registry, spec_files

    settings = _settings(ctx)
    if token:
        settings.registry_token = token
        settings.sources["registry_token"] = "--token"  # noqa: S105 (a source name)
    paths = spec_files(files)
    registry = Registry(settings)
    results = []
    with output.progress("registering", len(paths), not json_out) as advance:
        for path in paths:
            results.append(registry.register(path))
            advance(advance=1)
    if json_out:
        output.emit_json({"results": [r.to_json() for r in results]})
    else:
        for r in results:
            mark = "[green]ok[/]" if r.ok else "[red]refused[/]"
            output.out.print(f"{mark} {r.file}: {r.result} - {r.message}", markup=True)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
@command
def workflows(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List the workflows the registry knows, with their versions and default."""
    from tally_cli.registry import Registry

    items = Registry(_settings(ctx)).workflows()
    if json_out:
        output.emit_json({"workflows": items})
        return
    rows = [{**w, "versions": ", ".join(w.get("versions", []))} for w in items]
    output.table(rows, ["workflow", "versions", "default_version", "default_source"], "workflows")


@app.command()
@command
def workflow(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Workflow name.")],
    version: Annotated[
        str | None, typer.Option(help="Show this version's spec (default: the default version).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Show one workflow: its versions, default, and a version's expected outputs."""
    from tally_cli.errors import CheckFailed
    from tally_cli.registry import Registry

    registry = Registry(_settings(ctx))
    info = registry.workflow(name)
    chosen = version or info.get("default_version")
    spec = registry.spec(name, chosen) if chosen else None
    if version and spec is None:
        raise CheckFailed(
            f"workflow {name} has no version {version}; registered: "
            f"{', '.join(info.get('versions', []))}"
        )
    if json_out:
        output.emit_json({**info, "spec": spec})
        return
    output.out.print(
        f"{name}: versions {', '.join(info.get('versions', []))}; default "
        f"{info.get('default_version')} ({info.get('default_source')})"
    )
    if spec:
        deadline = spec.get("deadline_minutes")
        output.out.print(
            f"version {chosen}: {spec.get('description', '')}"
            + (f" (deadline {deadline} min)" if deadline else "")
        )
        rows = [
            {
                "expected": e.get("path") or e.get("pattern"),
                "count": e.get("count", 1),
                "required": e.get("required", True),
                "description": e.get("description"),
            }
            for e in spec.get("expected_outputs", [])
        ]
        output.table(rows, ["expected", "count", "required", "description"])


# -- runs ----------------------------------------------------------------------------------------


@app.command()
@command
def status(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(metavar="WORKFLOW/VERSION/RUN_ID", help="The run to show.")],
    require_complete: Annotated[
        bool,
        typer.Option("--require-complete", help="Exit 1 unless the run is COMPLETE (scripts)."),
    ] = False,
    all_outputs: Annotated[
        bool, typer.Option("--all", help="List every present output, not the first 20.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """A run's state, its present and missing outputs, manifest and delivery history."""
    from tally_cli.errors import CheckFailed
    from tally_cli.registry import Registry
    from tally_cli.status import RunStatus, parse_run

    try:
        parse_run(run)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="RUN") from None
    settings = _settings(ctx)
    registry = Registry(settings) if settings.registry_url else None
    with output.progress("listing the run folder", None, not json_out) as update:
        doc = RunStatus(_clients(ctx), registry).collect(run, lambda n: update(completed=n))
    if json_out:
        output.emit_json(doc)
    else:
        _print_status(doc, all_outputs)
    if require_complete and doc["state"] != "COMPLETE":
        raise CheckFailed(f"run {doc['run']} is {doc['state']}, not COMPLETE")


def _print_status(doc: dict[str, Any], all_outputs: bool) -> None:
    say = output.out.print
    colour = {
        "COMPLETE": "green",
        "FAILED": "red",
        "BLOCKED": "red",
        "STALLED": "yellow",
        "CHANGED": "yellow",
    }.get(doc["state"], "cyan")
    say(f"run {doc['run']}  [bold {colour}]{doc['state']}[/]", markup=True)
    say(f"folder gs://{doc['bucket']}/{doc['prefix']}")
    spec = doc["spec"]
    if spec:
        deadline = spec.get("deadline_minutes")
        say(
            f"spec   {spec['workflow']} {spec['version']}"
            + (
                f", deadline {deadline} min" + (" (past it)" if doc["past_deadline"] else "")
                if deadline
                else ""
            )
        )
    else:
        say(f"spec   unknown: {doc['spec_problem']}")
    outputs = doc["outputs"]
    say(
        f"outputs {len(outputs['present'])} present, {len(outputs['missing'])} missing,"
        f" {len(outputs['unexpected'])} unexpected; first output {doc['first_output_time'] or '-'}"
    )
    for item in outputs["missing"]:
        if "pattern" in item:
            say(f"  missing {item['pattern']}  ({item['found']} of {item['count']})")
        else:
            say(f"  missing {item['path']}")
    for path in outputs["unexpected"]:
        say(f"  unexpected {path}")
    present = outputs["present"] if all_outputs else outputs["present"][:20]
    output.table(present, ["path", "size", "generation", "time_created"], "present outputs")
    if len(present) < len(outputs["present"]):
        say(f"  ... and {len(outputs['present']) - len(present)} more (--all lists them)")
    _print_announcement(doc)
    output.table(
        doc["history"],
        ["received_time", "delivery_id", "delivery_attempt", "output_path", "outcome", "detail"],
        "deliveries (event log)",
    )


def _print_announcement(doc: dict[str, Any]) -> None:
    say = output.out.print
    announced = doc.get("announcement")
    if announced and "error" in announced:
        say(f"announcement record unreadable: {announced['error']}")
    elif announced:
        claim = (
            f"claimed by {announced['claimant']} {announced['claim_age_seconds']:.0f} s ago,"
            " not yet marked published"
            if announced["claim_status"] == "claimed"
            else f"published {announced['published_time']}"
        )
        say(
            f"announced revision {announced['revision']} {announced['state']},"
            f" {announced['outputs_count']} outputs, key {announced['idempotency_key']}; {claim}"
        )
        for change in doc.get("changes", []):
            say(f"  changed since: {change}")
    else:
        say("announced not yet")
    manifest = doc["manifest"]
    if manifest.get("foreign"):
        say(f"manifest [bold red]blocked[/]: {manifest['foreign']}", markup=True)
    elif manifest.get("present"):
        match = (
            "matches the record" if manifest.get("matches_record") else "differs from the record"
        )
        say(f"manifest generation {manifest['generation']}, {match}")
    else:
        say("manifest none" + (" (reconciliation restores it)" if announced else " yet"))


@app.command()
@command
def runs(
    ctx: typer.Context,
    stalled: Annotated[bool, typer.Option("--stalled", help="Only STALLED runs.")] = False,
    incomplete: Annotated[
        bool,
        typer.Option(
            "--incomplete",
            help="Only runs without a current announcement (RUNNING, STALLED, ANNOUNCING,"
            " CHANGED, BLOCKED).",
        ),
    ] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only FAILED runs.")] = False,
    state: Annotated[
        list[str] | None,
        typer.Option(help="Only runs in this state (repeatable), e.g. --state CHANGED."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs active within this long: 30m, 2h, 7d.")
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many runs.")] = 100,
    json_out: JsonFlag = False,
) -> None:
    """List runs from the run_status view, most recently active first."""
    from tally_cli.eventlog import EventLog

    states = set()
    if stalled:
        states.add("STALLED")
    if incomplete:
        states.update({"RUNNING", "STALLED", "ANNOUNCING", "CHANGED", "BLOCKED"})
    if failed:
        states.add("FAILED")
    states.update(s.upper() for s in state or ())
    seconds = parse_duration(since) if since is not None else None
    rows = EventLog(_clients(ctx)).runs(sorted(states), seconds, workflow, limit)
    if json_out:
        output.emit_json({"runs": rows})
        return
    output.table(
        rows,
        [
            "workflow",
            "version",
            "run_id",
            "state",
            "revision",
            "outputs_seen",
            "first_event_time",
            "last_received_time",
            "completion_seconds",
        ],
        "runs",
    )


# -- event log -----------------------------------------------------------------------------------


@app.command()
@command
def query(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="A documented query (tally query --list).")
    ] = None,
    list_queries: Annotated[
        bool, typer.Option("--list", help="List the documented queries.")
    ] = False,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A query parameter: NAME=VALUE.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Run a documented query from bigquery/queries/ on the event log."""
    from tally_cli.eventlog import EventLog, catalogue

    queries = catalogue()
    if list_queries or name is None:
        if name is None and not list_queries:
            raise typer.BadParameter("name a query, or pass --list", param_hint="NAME")
        listing = [
            {
                "name": q.name,
                "description": q.description,
                "params": [
                    {"name": p.name, "type": p.type, "default": p.default, "help": p.help}
                    for p in q.params
                ],
            }
            for q in queries.values()
        ]
        if json_out:
            output.emit_json({"queries": listing})
        else:
            for item in listing:
                params = " ".join(
                    p["name"] if p["default"] is None else f"{p['name']}={p['default'] or EMPTY}"
                    for p in item["params"]
                )
                output.out.print(
                    f"[bold]{item['name']}[/] {params}\n  {item['description']}", markup=True
                )
        return
    if name not in queries:
        raise typer.BadParameter(
            f"no documented query {name!r}; known: {', '.join(queries)}", param_hint="NAME"
        )
    given: dict[str, str] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--param")
        given[key] = value
    rows = EventLog(_clients(ctx)).documented(queries[name], given)
    if json_out:
        output.emit_json({"query": name, "rows": rows})
        return
    output.table(rows, list(rows[0]) if rows else [], name)


# -- repair --------------------------------------------------------------------------------------


@app.command()
@command
def reconcile(
    ctx: typer.Context,
    prefix: Annotated[
        str | None, typer.Option(help="Only runs under this object prefix, e.g. 'rna-seq/2.0.0/'.")
    ] = None,
    every_run: Annotated[
        bool,
        typer.Option(
            "--all", help="Walk every run folder, not only the runs tally knows may be open."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change (runs in this process).")
    ] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Run here instead of queueing a request.")
    ] = False,
    max_runs: Annotated[int, typer.Option(min=1, help="Runs examined per page.")] = 500,
    json_out: JsonFlag = False,
) -> None:
    """Re-derive announcements from the bucket: announce complete runs and revisions of changed
    ones, finish stuck claims, restore deleted manifests, flag stalled runs.

    By default a reconcile request is queued on the object-events topic for the event handler;
    it visits the runs that may be open (tally's open-run index) unless --prefix or --all.
    """
    from tally_cli import reconcile as rec

    clients = _clients(ctx)
    if local or dry_run:
        with output.progress("reconciling", None, not json_out) as update:
            doc = rec.run_locally(
                clients, prefix, max_runs, dry_run, lambda n: update(completed=n), every_run
            )
    else:
        doc = rec.queue_request(clients, prefix, every_run)
    if json_out:
        output.emit_json(doc)
    elif doc["queued"]:
        output.out.print(
            f"queued a reconcile request (message {doc['message_id']} on {doc['topic']}"
            + (f", prefix {prefix}" if prefix else "")
            + "); the event handler logs its results: tally runs --stalled,"
            " tally query stalled_runs"
        )
    else:
        verb = "would announce" if dry_run else "announced"
        output.out.print(
            f"examined {doc['examined']} runs: {verb} {len(doc['announced'])},"
            f" stalled {len(doc['stalled'])}, incomplete {len(doc['incomplete'])},"
            f" changed {len(doc['changed'])}, manifests restored {len(doc['restored'])},"
            f" being announced {len(doc['announcing'])}, blocked {len(doc['blocked'])}"
        )
        for heading in ("announced", "stalled", "changed", "restored", "announcing", "blocked"):
            for key in doc[heading]:
                output.out.print(f"  {verb if heading == 'announced' else heading} {key}")


@app.command()
@command
def replay(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be replayed; move nothing.")
    ] = False,
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="ATTRIBUTE=GLOB that a message must match (repeatable; all must match), "
            "e.g. eventType=OBJECT_FINALIZE, 'objectId=rna-seq/*'.",
        ),
    ] = None,
    max_messages: Annotated[
        int, typer.Option("--max", min=1, help="Replay at most this many messages.")
    ] = 1000,
    subscription: Annotated[
        str | None,
        typer.Option(help="Dead-letter subscription (TALLY_DEAD_LETTER_SUBSCRIPTION)."),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Topic to replay to (TALLY_OBJECT_EVENTS_TOPIC).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Move dead-lettered messages back to object-events, marked tally-replayed=true."""
    from tally_cli.replay import Replayer, parse_filters

    try:
        filters = parse_filters(filter_ or [])
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--filter") from None
    settings = _settings(ctx)
    replayer = Replayer(
        _clients(ctx),
        subscription or settings.dead_letter_subscription,
        topic or settings.object_events_topic,
    )
    with output.progress("replaying", None, not json_out) as update:
        report = replayer.run(
            filters, max_messages, dry_run, lambda r: update(completed=len(r.matched))
        )
    if json_out:
        output.emit_json(report.to_json())
        return
    if dry_run:
        output.out.print(
            f"dry run: would replay {len(report.matched)} of {report.examined} "
            f"dead letters to {report.topic}; nothing moved"
        )
    else:
        output.out.print(
            f"replayed {report.replayed} of {report.examined} dead letters to "
            f"{report.topic}; {report.skipped} left in {report.subscription}"
        )
    output.table(
        [
            {
                "message_id": m["message_id"],
                "objectId": m["attributes"].get("objectId"),
                "eventType": m["attributes"].get("eventType"),
                "new_message_id": m.get("new_message_id"),
            }
            for m in report.matched
        ],
        ["message_id", "eventType", "objectId", *([] if dry_run else ["new_message_id"])],
    )


# -- deployment ----------------------------------------------------------------------------------


@app.command()
@command
def check(
    ctx: typer.Context,
    terraform_outputs: Annotated[
        Path | None,
        typer.Option(
            help="`terraform output -json` of the deployment (a file, or - for stdin): registry "
            "URL, bucket, topic, tables, check subscription."
        ),
    ] = None,
    subscription: Annotated[
        str | None,
        typer.Option(
            help="Subscription on the completions topic to wait on (terraform output "
            "check_subscription_id; default: a temporary one, deleted at the end)."
        ),
    ] = None,
    events_table: Annotated[
        str | None, typer.Option(help="project.dataset.table (default: DATASET.events).")
    ] = None,
    runs_table: Annotated[
        str | None, typer.Option(help="project.dataset.table (default: DATASET.runs).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="A registry writer's ID token (TALLY_REGISTRY_TOKEN).")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the announcement.")
    ] = 120.0,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the check run's objects in the bucket.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Check a deployment end to end: register, write a run, see it announced and logged.

    Exit 0 only if every step passed; 1 if one failed (each verdict says what to fix).
    """
    import sys

    from tally_cli.check import Check, Target, apply_terraform_outputs

    settings = _settings(ctx)
    extra: dict[str, str] = {}
    if terraform_outputs is not None:
        where = "stdin" if str(terraform_outputs) == "-" else str(terraform_outputs)
        try:
            text = sys.stdin.read() if where == "stdin" else terraform_outputs.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
        extra = apply_terraform_outputs(settings, text, where)
    if token:
        settings.registry_token = token
        settings.sources["registry_token"] = "--token"  # noqa: S105 (a source name)
    settings.require("registry_url")
    settings.require("outputs_bucket")
    target = Target(
        settings,
        events_table=events_table or extra.get("events_table") or settings.table("events"),
        runs_table=runs_table or extra.get("runs_table") or settings.table("runs"),
        check_subscription=subscription or extra.get("check_subscription"),
        wait=wait,
        keep=keep,
    )
    marks = {"ok": "[green]ok[/]", "failed": "[red]FAILED[/]", "skipped": "[yellow]skipped[/]"}

    def show(step: Any) -> None:
        if json_out:
            output.err.print(f"{step.name}: {step.status}", highlight=False)
            return
        output.out.print(
            f"{marks[step.status]:<22} {step.title} ({step.seconds:.1f} s): {step.detail}",
            markup=True,
        )
        if step.fix:
            output.out.print(f"{'':<8} fix: {step.fix}")

    if not json_out:
        output.out.print(f"tally check: run {target.run_id}, registry {settings.registry_url}")
    runner = Check(_clients(ctx), target, show)
    steps = runner.run()
    if json_out:
        output.emit_json(
            {
                "passed": runner.passed,
                "run_id": target.run_id,
                "steps": [s.to_json() for s in steps],
            }
        )
    else:
        failed = [s.name for s in steps if s.status == "failed"]
        output.out.print(
            "[bold green]PASSED[/]: the deployment works end to end"
            if runner.passed
            else f"[bold red]FAILED[/]: {', '.join(failed) or 'skipped steps'}",
            markup=True,
        )
    if not runner.passed:
        raise typer.Exit(EXIT_CHECK_FAILED)


if __name__ == "__main__":  # pragma: no cover
    app(prog_name="tally")
