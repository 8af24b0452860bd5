"""Layout: object names <-> run outputs, table-driven with odd names."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tally_handler.layout import (
    DEFAULT_TEMPLATE,
    Layout,
    OutputKind,
    Run,
    RunOutput,
    classify,
    idempotency_key,
)

DEFAULT = Layout.parse(DEFAULT_TEMPLATE)
NESTED = Layout.parse("runs/{workflow}/{version}/{run_id}/{path}")
REORDERED = Layout.parse("{run_id}/of/{workflow}/{version}/{path}")
LONG_PATH = "é" * 500  # 1,000 bytes of UTF-8

MATCHES = [
    # (layout, object name, expected run output or None)
    (DEFAULT, "wf/1.0.0/run1/out.txt", RunOutput("wf", "1.0.0", "run1", "out.txt")),
    (DEFAULT, "wf/1.0.0/run 1/a#b?.txt", RunOutput("wf", "1.0.0", "run 1", "a#b?.txt")),
    (DEFAULT, "wf/1/r/deep/er/x.bin", RunOutput("wf", "1", "r", "deep/er/x.bin")),
    (DEFAULT, "wf/1/r/100%25 done%", RunOutput("wf", "1", "r", "100%25 done%")),
    (DEFAULT, "流程/版本 2/运行#3/结果?.csv", RunOutput("流程", "版本 2", "运行#3", "结果?.csv")),
    (DEFAULT, "w\u0301f/v/r/\U0001f600.png", RunOutput("w\u0301f", "v", "r", "\U0001f600.png")),
    (DEFAULT, "wf/v/r/ leading and trailing ", RunOutput("wf", "v", "r", " leading and trailing ")),
    (DEFAULT, "wf/v/r/tab\there", RunOutput("wf", "v", "r", "tab\there")),
    (DEFAULT, "wf/v/r//double-slash", RunOutput("wf", "v", "r", "/double-slash")),
    (DEFAULT, "wf/v/r/folder/", RunOutput("wf", "v", "r", "folder/")),
    (DEFAULT, "wf/v/r/output.json", RunOutput("wf", "v", "r", "output.json")),
    (DEFAULT, "wf/v/r/_tally/outputs-1.json", RunOutput("wf", "v", "r", "_tally/outputs-1.json")),
    (DEFAULT, "wf/v/r/..", RunOutput("wf", "v", "r", "..")),
    (DEFAULT, f"wf/v/r/{LONG_PATH}", RunOutput("wf", "v", "r", LONG_PATH)),
    (DEFAULT, "wf/v/r/", None),  # no path
    (DEFAULT, "wf/v/r", None),
    (DEFAULT, "wf/v", None),
    (DEFAULT, "", None),
    (DEFAULT, "wf//r/x", None),  # empty version
    (DEFAULT, "/v/r/x", None),  # empty workflow
    (DEFAULT, "wf/v//x", None),  # empty run id
    (NESTED, "runs/wf/1/r/x", RunOutput("wf", "1", "r", "x")),
    (NESTED, "runs/wf/1/r/a/b/c", RunOutput("wf", "1", "r", "a/b/c")),
    (NESTED, "other/wf/1/r/x", None),
    (NESTED, "runsx/wf/1/r/x", None),
    (NESTED, "wf/1/r/x", None),
    (REORDERED, "r9/of/wf/2/x", RunOutput("wf", "2", "r9", "x")),
    (REORDERED, "r9/off/wf/2/x", None),
]


@pytest.mark.parametrize(("layout", "name", "expected"), MATCHES, ids=lambda v: repr(v)[:40])
def test_match(layout: Layout, name: str, expected: RunOutput | None) -> None:
    assert layout.match(name) == expected


@pytest.mark.parametrize(("layout", "name", "expected"), [m for m in MATCHES if m[2]])
def test_object_name_round_trips(layout: Layout, name: str, expected: RunOutput) -> None:
    assert layout.object_name(expected) == name


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{workflow}/{version}/{run_id}", "end with"),
        ("{workflow}/{version}/{path}", "lacks {run_id}"),
        ("{version}/{run_id}/{path}", "lacks {workflow}"),
        ("{workflow}/{version}/{run_id}/{path}/x", "end with"),
        ("{path}/{workflow}/{version}/{run_id}/{path}", "last segment"),
        ("/{workflow}/{version}/{run_id}/{path}", "empty segment"),
        ("{workflow}//{version}/{run_id}/{path}", "empty segment"),
        ("{workflow}/{workflow}/{version}/{run_id}/{path}", "twice"),
        ("{workflow}/{bogus}/{version}/{run_id}/{path}", "unknown placeholder {bogus}"),
        ("{workflow}/v{version}/{run_id}/{path}", "mixes text"),
        ("{workflow}/{version}/{run_id}/{path", "end with"),
        ("", "end with"),
    ],
)
def test_invalid_templates_name_the_problem(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match="layout template") as caught:
        Layout.parse(template)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("layout", "prefix", "root"),
    [
        (DEFAULT, "wf/1.0/run 1/", ""),
        (NESTED, "runs/wf/1.0/run 1/", "runs/"),
        (REORDERED, "run 1/of/wf/1.0/", ""),
    ],
)
def test_run_prefix_and_runs_root(layout: Layout, prefix: str, root: str) -> None:
    assert layout.run_prefix("wf", "1.0", "run 1") == prefix
    assert layout.runs_root_prefix() == root
    assert prefix.startswith(root)


@pytest.mark.parametrize(("workflow", "version", "run_id"), [("", "1", "r"), ("w", "a/b", "r")])
def test_run_prefix_refuses_non_segments(workflow: str, version: str, run_id: str) -> None:
    with pytest.raises(ValueError, match="one non-empty path segment"):
        DEFAULT.run_prefix(workflow, version, run_id)


def test_run() -> None:
    run_key = NESTED.run("outs", RunOutput("wf", "1.0", "run 1", "x/y"))
    assert run_key == Run("outs", "wf", "1.0", "run 1", "runs/wf/1.0/run 1/")
    assert run_key.key == "outs/wf/1.0/run 1"
    expected = hashlib.sha256(b"outs/wf/1.0/run 1").hexdigest()[:32]
    assert run_key.idempotency_key == expected == idempotency_key("outs/wf/1.0/run 1")
    assert len(run_key.idempotency_key) == 32


def test_idempotency_key_does_not_depend_on_the_layout() -> None:
    output = RunOutput("wf", "1", "r", "x")
    assert DEFAULT.run("b", output).idempotency_key == NESTED.run("b", output).idempotency_key


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("output.json", OutputKind.MANIFEST),
        ("_tally/outputs-abc.json", OutputKind.TALLY_INTERNAL),
        ("_tally/", OutputKind.TALLY_INTERNAL),
        ("_FAILED", OutputKind.FAILURE_MARKER),
        ("sub/output.json", OutputKind.OUTPUT),
        ("_tally", OutputKind.OUTPUT),
        ("_tallyx/a", OutputKind.OUTPUT),
        ("_FAILED.txt", OutputKind.OUTPUT),
        ("result.csv", OutputKind.OUTPUT),
    ],
)
def test_classify(path: str, kind: OutputKind) -> None:
    assert classify(path, "output.json", "_FAILED") is kind


segment = st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s)


@settings(derandomize=True, max_examples=200, print_blob=True)
@given(
    workflow=segment,
    version=segment,
    run_id=segment,
    path=st.text(min_size=1, max_size=30),
    layout=st.sampled_from([DEFAULT, NESTED, REORDERED]),
)
def test_any_name_round_trips(
    workflow: str, version: str, run_id: str, path: str, layout: Layout
) -> None:
    output = RunOutput(workflow, version, run_id, path)
    assert layout.match(layout.object_name(output)) == output
