"""Each package's errors: one errors.py whose docstring draws the whole tree, and one table from
error type to what it becomes (handler: outcome; registry: HTTP answer; CLI: exit status)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tally_handler
import tally_registry
from tally_handler import errors as handler_errors
from tally_handler.delivery import Delivery, Reconcile, Source
from tally_handler.faults import InjectedFault
from tally_handler.outcomes import Outcome
from tally_handler.reconcile import reconcile_request
from tally_handler.rows import StorageOps
from tally_registry import errors as registry_errors

import tally_cli
from tally_cli import errors as cli_errors
from tests.unit.world import World, config

# Exceptions defined beside what they carry, drawn in their package's tree all the same.
DEFINED_ELSEWHERE = {"MalformedDelivery", "InjectedFault"}


def modules(package: ModuleType) -> list[ModuleType]:
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]


def exceptions_of(package: ModuleType) -> dict[str, type[BaseException]]:
    found = {}
    for module in modules(package):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[value.__name__] = value
    return found


PACKAGES = [
    (tally_handler, handler_errors),
    (tally_registry, registry_errors),
    (tally_cli, cli_errors),
]
IDS = ["handler", "registry", "cli"]


@pytest.mark.parametrize(("package", "errors"), PACKAGES, ids=IDS)
def test_every_exception_is_in_errors_and_in_its_drawn_tree(
    package: ModuleType, errors: ModuleType
) -> None:
    found = exceptions_of(package)
    elsewhere = {n: e for n, e in found.items() if e.__module__ != errors.__name__}
    assert set(elsewhere) <= DEFINED_ELSEWHERE, f"define these in {errors.__name__}"
    tree = errors.__doc__ or ""
    drawn = set(re.findall(r"(?:├──|└──|^\s{4})\s*(?:\w+\.)?([A-Z]\w+)", tree, re.MULTILINE))
    assert set(found) <= drawn, f"{errors.__name__}'s docstring lacks {set(found) - drawn}"


# -- event handler ----------------------------------------------------------------------------


def test_every_handler_error_has_one_outcome() -> None:
    for name, error in exceptions_of(tally_handler).items():
        if error is InjectedFault:
            continue  # a simulated crash: re-raised, never an outcome
        assert handler_errors.outcome_of(error("x")) in Outcome, name
    expected = {
        "TransientError": Outcome.DEFERRED,
        "RegistryUnavailable": Outcome.DEFERRED,
        "UnknownWorkflow": Outcome.UNKNOWN_WORKFLOW,
        "UnsatisfiableSpec": Outcome.BLOCKED,
        "NotTallys": Outcome.BLOCKED,
        "PrefixOutsideLayout": Outcome.REJECTED,
        "MalformedDelivery": Outcome.REJECTED,
        "ListingOrderError": Outcome.DEFERRED,  # a bug
    }
    found = exceptions_of(tally_handler)
    for name, outcome in expected.items():
        assert handler_errors.outcome_of(found[name]("x")) is outcome, name
    assert handler_errors.outcome_of(KeyError("bug")) is Outcome.DEFERRED


def test_the_handler_tree_says_each_outcome_the_table_gives() -> None:
    found = exceptions_of(tally_handler)
    for line in (handler_errors.__doc__ or "").splitlines():
        match = re.search(r"(?:├──|└──)\s*(\w+)(?: \(\w+\))?\s+([a-z-]+):", line)
        if match and match.group(1) in found:
            error = found[match.group(1)]
            assert str(handler_errors.outcome_of(error("x"))) == match.group(2), line


def reconcile_delivery(prefix: str) -> Delivery:
    return Delivery(Source.PUBSUB_PUSH, "r1", reconcile=Reconcile(prefix=prefix))


def test_a_prefix_outside_the_layout_is_rejected_with_what_to_send() -> None:
    world = World(cfg=config(TALLY_LAYOUT="runs/{workflow}/{version}/{run_id}/{path}"))
    result = reconcile_request(
        world.handlers[0], reconcile_delivery("other/"), StorageOps(), lambda *_: None, None
    )
    assert result.outcome is Outcome.REJECTED
    assert "outside the layout's root 'runs/'; send a prefix inside the layout" in result.detail


def test_another_value_error_in_a_reconcile_request_is_not_blamed_on_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tally_handler import reconcile

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("a bug")

    monkeypatch.setattr(reconcile, "reconcile_runs", broken)
    world = World()
    with pytest.raises(ValueError, match="a bug"):  # the app logs it at ERROR and defers it
        reconcile_request(
            world.handlers[0], reconcile_delivery("wf/"), StorageOps(), lambda *_: None, None
        )


# -- registry ---------------------------------------------------------------------------------

REGISTRY_5XX = {"Unavailable", "StoreError", "InvalidStoredDocument", "ConfigError", "Exception"}


def test_a_clients_fault_is_always_4xx_and_5xx_only_the_registrys() -> None:
    answers = {error.__name__: a.status for error, a in registry_errors.ANSWER.items()}
    assert {name for name, status in answers.items() if status >= 500} == REGISTRY_5XX
    assert all(400 <= status < 500 for n, status in answers.items() if n not in REGISTRY_5XX)
    for name, error in exceptions_of(tally_registry).items():
        if error is not registry_errors.ApiError:
            answer = registry_errors.api_error(error("x"))
            assert 400 <= answer.status < 600 and answer.code, name


def test_every_literal_api_error_is_a_4xx() -> None:
    """5xx answers come only from the table: an ApiError the code raises is the client's fault."""
    root = Path(registry_errors.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "ApiError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                assert 400 <= node.args[0].value < 500, f"{path.name}:{node.lineno}"


def test_the_registry_tree_says_each_answer_the_table_gives() -> None:
    found = exceptions_of(tally_registry)
    checked = 0
    for line in (registry_errors.__doc__ or "").splitlines():
        match = re.search(r"(?:├──|└──)\s*(\w+)(?: \(\w+\))?\s+(\d{3}) ([a-z-]+):", line)
        if match:
            answer = registry_errors.answer_of(found[match.group(1)]("x"))
            assert (answer.status, answer.code) == (int(match.group(2)), match.group(3)), line
            checked += 1
    assert checked == len(registry_errors.ANSWER) - 1  # every row but Exception's


def test_a_bugs_text_never_reaches_a_response() -> None:
    answer = registry_errors.api_error(KeyError("secret internals"))
    assert (answer.status, answer.code) == (500, "internal")
    assert "secret" not in answer.message


# -- CLI --------------------------------------------------------------------------------------


def test_every_cli_error_has_one_exit_status() -> None:
    expected = {
        "TallyError": 1,
        "CheckFailed": 1,
        "StepFailed": 1,
        "ConfigError": 2,
        "Unreachable": 3,
    }
    found = exceptions_of(tally_cli)
    assert set(found) == set(expected)
    for name, status in expected.items():
        error = found[name]("x", "fix") if name == "StepFailed" else found[name]("x")
        assert cli_errors.exit_status(error) == status, name
    assert cli_errors.exit_status(KeyboardInterrupt()) == 130
    with pytest.raises(KeyError, match="EXIT_STATUS"):
        cli_errors.exit_status(RuntimeError())


def test_the_cli_tree_says_each_exit_status() -> None:
    found = exceptions_of(tally_cli)
    for line in (cli_errors.__doc__ or "").splitlines():
        match = re.search(r"(?:├──|└──|^\s{4})\s*(\w+)\s+(\d+)\s", line)
        if match and match.group(1) in found:
            error = found[match.group(1)]
            made = error("x", "fix") if error is cli_errors.StepFailed else error("x")
            assert cli_errors.exit_status(made) == int(match.group(2)), line


def test_the_cli_exits_with_the_tables_status(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tally_cli.main import app

    result = CliRunner().invoke(
        app, ["status", "not-a-run"], env={"TALLY_ENV_FILE": str(tmp_path / "none")}
    )
    assert result.exit_code == cli_errors.EXIT_STATUS[cli_errors.ConfigError]
