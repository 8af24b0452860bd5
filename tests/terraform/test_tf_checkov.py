"""checkov on terraform/: no failed check, and every skip is written next to its resource with
a reason."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.tfmodel import SUMMARY, TF_DIR

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?$")


def run_checkov(directory: Path) -> dict[str, Any]:
    """checkov's JSON report of one directory (offline: --skip-download)."""
    venv_checkov = Path(sys.executable).parent / "checkov"
    checkov = str(venv_checkov) if venv_checkov.exists() else shutil.which("checkov")
    assert checkov, "checkov is not installed (make install)"
    command = [checkov, "--skip-download", "-d", str(directory), "--framework", "terraform"]
    # Not --quiet: with it, the JSON report leaves out the skipped checks this test reads.
    command += ["--compact", "-o", "json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    # One framework gives one report; checkov prints a list when there are several.
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = run_checkov(TF_DIR)
    summary = result["summary"]
    SUMMARY.append(
        f"checkov {summary['checkov_version']}: passed {summary['passed']}, "
        f"failed {summary['failed']}, skipped {summary['skipped']} "
        f"({summary['resource_count']} resources)"
    )
    return result


def skip_comments(directory: Path) -> list[tuple[str, int, str, str]]:
    """Every `checkov:skip` comment: (file, line, check id, reason)."""
    found = []
    for path in sorted(directory.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if match:
                found.append((path.name, number, match.group(1), (match.group(2) or "").strip()))
    return found


def test_no_failed_check(report: dict[str, Any]) -> None:
    failed = report["results"].get("failed_checks", [])
    assert report["summary"]["parsing_errors"] == 0
    assert not failed, [f"{c['check_id']} {c['resource']} {c['file_path']}" for c in failed]


def test_every_skip_has_an_inline_reason(report: dict[str, Any]) -> None:
    skipped = report["results"].get("skipped_checks", [])
    assert len(skipped) == report["summary"]["skipped"]
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) >= 20, f"{check['check_id']} on {check['resource']}: reason {reason!r}"
    comments = skip_comments(TF_DIR)
    assert comments, "the report has skips but no inline comment was found"
    for file, line, check_id, reason in comments:
        assert len(reason) >= 20, f"{file}:{line}: skip of {check_id} needs a reason"


def test_skip_comments_sit_inside_the_resource(report: dict[str, Any]) -> None:
    """A skip comment outside a resource block would silently apply to nothing."""
    used = {
        (c["check_id"], c["resource"].split("[")[0]) for c in report["results"]["skipped_checks"]
    }
    for file, line, check_id, _ in skip_comments(TF_DIR):
        text = (TF_DIR / file).read_text().splitlines()
        header = next(
            (t for t in reversed(text[: line - 1]) if t.startswith(("resource ", "data "))), ""
        )
        match = re.match(r'(resource|data) "([^"]+)" "([^"]+)"', header)
        assert match, f"{file}:{line}: skip comment outside a resource block"
        address = f"{match.group(2)}.{match.group(3)}"
        if match.group(1) == "data":
            address = "data." + address
        assert (check_id, address) in used, f"{file}:{line}: {check_id} is not skipped on {address}"


# --- the checks above can fail --------------------------------------------------------------------


def test_checkov_catches_a_public_bucket(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "b" {\n'
        '  name     = "b"\n'
        '  location = "EU"\n'
        "}\n"
        'resource "google_storage_bucket_iam_member" "public" {\n'
        "  bucket = google_storage_bucket.b.name\n"
        '  role   = "roles/storage.objectViewer"\n'
        '  member = "allUsers"\n'
        "}\n"
        'resource "google_pubsub_topic" "t" {\n'
        "  # checkov:skip=CKV_GCP_83\n"
        '  name = "t"\n'
        "}\n"
    )
    result = run_checkov(tmp_path)
    failed = {c["check_id"] for c in result["results"]["failed_checks"]}
    assert {"CKV_GCP_114", "CKV_GCP_29", "CKV_GCP_28"} <= failed
    assert ("main.tf", 11, "CKV_GCP_83", "") in skip_comments(tmp_path)  # no reason: refused above
