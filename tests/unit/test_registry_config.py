"""The registry's configuration, its reading of the event handler's layout, and the reconcile
request it publishes on registration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tally_registry.config import Config
from tally_registry.errors import ConfigError
from tally_registry.layout import DEFAULT_LAYOUT, RunLayout
from tally_registry.reconcile import MemoryReconcileQueue, reconcile_message

BASE = {"TALLY_REGISTRY_BUCKET": "b", "TALLY_REGISTRY_AUDIENCE": "https://r"}


def test_defaults_match_the_event_handler() -> None:
    cfg = Config.from_env(BASE)
    assert (cfg.manifest_name, cfg.failure_marker) == ("output.json", "_FAILED")
    assert cfg.layout == DEFAULT_LAYOUT
    assert (cfg.project, cfg.object_events_topic) == (None, None)
    assert cfg.run_folder.layout.template == "{workflow}/{version}/{run_id}/{path}"


def test_shared_variables_are_read() -> None:
    cfg = Config.from_env(
        {
            **BASE,
            "TALLY_PROJECT": "p",
            "TALLY_OBJECT_EVENTS_TOPIC": "object-events",
            "TALLY_LAYOUT": "runs/{workflow}/{version}/{run_id}/{path}",
            "TALLY_MANIFEST_NAME": "manifest.json",
            "TALLY_FAILURE_MARKER": "FAILED.txt",
        }
    )
    assert (cfg.project, cfg.object_events_topic) == ("p", "object-events")
    folder = cfg.run_folder
    assert (folder.manifest_name, folder.failure_marker) == ("manifest.json", "FAILED.txt")
    assert folder.layout.run_prefix("wf", "1", "r") == "runs/wf/1/r/"


def test_storage_project_falls_back_to_google_cloud_project() -> None:
    assert Config.from_env({**BASE, "GOOGLE_CLOUD_PROJECT": "g"}).project == "g"
    assert Config.from_env({**BASE, "GOOGLE_CLOUD_PROJECT": "g", "TALLY_PROJECT": "t"}).project == (
        "t"
    )


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"TALLY_LAYOUT": "{workflow}/{run_id}/{path}"}, ["TALLY_LAYOUT", "lacks {version}"]),
        ({"TALLY_LAYOUT": "{workflow}/{version}/{run_id}"}, ["TALLY_LAYOUT", "'/{path}'"]),
        ({"TALLY_MANIFEST_NAME": "_tally/m.json"}, ["TALLY_MANIFEST_NAME", "_tally/"]),
        ({"TALLY_FAILURE_MARKER": "/FAILED"}, ["TALLY_FAILURE_MARKER", "inside the run folder"]),
        ({"TALLY_FAILURE_MARKER": "output.json"}, ["both 'output.json'", "different names"]),
        ({"TALLY_OBJECT_EVENTS_TOPIC": "object-events"}, ["TALLY_PROJECT is not", "project"]),
        (
            {"TALLY_PROJECT": "p", "TALLY_OBJECT_EVENTS_TOPIC": "projects/p/topics/t"},
            ["topic id"],
        ),
        ({"TALLY_REGISTRY_LIST_TTL_SECONDS": "soon"}, ["TALLY_REGISTRY_LIST_TTL_SECONDS"]),
    ],
)
def test_invalid_settings_say_what_to_set(env: dict[str, str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({**BASE, **env})
    for needle in needles:
        assert needle in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"TALLY_LAYOUT": "x", "TALLY_MANIFEST_NAME": "/m"})
    text = str(info.value)
    for name in ("TALLY_REGISTRY_BUCKET", "TALLY_REGISTRY_AUDIENCE", "TALLY_LAYOUT", "MANIFEST"):
        assert name in text


def test_path_budget_and_version_prefix() -> None:
    assert DEFAULT_LAYOUT.path_budget("wf", "1.0.0") == 1024 - len("wf/1.0.0/x/")
    assert DEFAULT_LAYOUT.version_prefix("wf", "1.0.0") == "wf/1.0.0/"
    nested = RunLayout.parse("runs/{version}/x/{workflow}/{run_id}/out/{path}")
    assert nested.path_budget("wf", "1") == 1024 - len("runs/1/x/wf/x/out/")
    assert nested.version_prefix("wf", "1") == "runs/1/x/wf/"
    assert RunLayout.parse("{workflow}/{run_id}/{version}/{path}").version_prefix("w", "v") is None


SEGMENTS = st.sampled_from(["{workflow}", "{version}", "{run_id}", "{path}", "runs", "a{b}", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENTS, min_size=1, max_size=6))
def test_layout_parsing_agrees_with_the_event_handler(parts: list[str]) -> None:
    """The registry refuses and names run folders exactly as the event handler does."""
    handler_layout = pytest.importorskip("tally_handler.layout")
    template = "/".join(parts)
    try:
        theirs = handler_layout.Layout.parse(template)
    except ValueError:
        theirs = None
    try:
        ours = RunLayout.parse(template)
    except ValueError:
        ours = None
    assert (ours is None) == (theirs is None), template
    if ours is not None and theirs is not None:
        assert ours.run_prefix("w", "v", "r") == theirs.run_prefix("w", "v", "r")


def test_reconcile_message() -> None:
    data, attributes = reconcile_message("wf", "1.0.0", DEFAULT_LAYOUT)
    assert data == b"{}"
    assert attributes == {
        "tally-request": "reconcile",
        "workflow": "wf",
        "version": "1.0.0",
        "prefix": "wf/1.0.0/",
    }
    run_first = RunLayout.parse("{run_id}/{workflow}/{version}/{path}")
    assert "prefix" not in reconcile_message("wf", "1.0.0", run_first)[1]


def test_memory_queue_records_or_fails() -> None:
    queue = MemoryReconcileQueue()
    queue.request("wf", "1")
    assert queue.requests == [("wf", "1")]
    queue.fail = RuntimeError("down")
    with pytest.raises(RuntimeError):
        queue.request("wf", "2")
    assert queue.requests == [("wf", "1")]
