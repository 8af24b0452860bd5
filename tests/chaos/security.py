"""Security checks of `make chaos`: checkov on terraform/, a vulnerability audit of each function's
pinned requirements, and the registry refusing every write without a valid writer's token.

The audit runs pip-audit against PyPI's vulnerability service. When that service cannot be reached
(every dependency comes back "not found on PyPI", which is what a mirror of the package index
alone answers), it says so and audits the same resolved dependency list against an offline
database instead: the `safety-db` package's advisory file, if installed (its date is reported:
it only knows advisories published before it).
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FUNCTIONS = ("event_handler", "registry")
WRITER = "writer@tally.test"
OSV_HOST = "api.osv.dev"


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)
    unavailable: bool = False  # could not be carried out here (reported, not a failure)


# -- checkov --------------------------------------------------------------------------------------
def checkov(root: Path = ROOT) -> Check:
    argv = [
        str(BIN / "checkov"),
        "--skip-download",
        "-d",
        "terraform",
        "--framework",
        "terraform",
        "--compact",
        "-o",
        "json",
    ]
    out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    try:
        reports = json.loads(out.stdout)
    except ValueError:
        return Check(
            "checkov terraform/",
            False,
            f"no JSON report (exit {out.returncode})",
            [out.stderr[-2000:]],
        )
    reports = reports if isinstance(reports, list) else [reports]
    summary = reports[0].get("summary", {})
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for report in reports
        for c in report.get("results", {}).get("failed_checks", [])
    ]
    text = (
        f"{summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed,"
        f" {summary.get('skipped', 0)} skipped (each skip carries its reason in terraform/),"
        f" {summary.get('resource_count', 0)} resources, checkov {summary.get('checkov_version')}"
    )
    return Check("checkov terraform/", not failed and out.returncode == 0, text, failed)


# -- dependency audit -----------------------------------------------------------------------------
def _pip_audit(requirements: Path, service: str) -> dict[str, Any] | str:
    argv = [
        str(BIN / "pip-audit"),
        "-r",
        str(requirements),
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--vulnerability-service",
        service,
        "--timeout",
        "20",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:300]


def _audited(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    deps = report.get("dependencies", [])
    return [d for d in deps if "skip_reason" not in d], [d for d in deps if "skip_reason" in d]


def offline_database() -> tuple[dict[str, Any], str] | None:
    spec = importlib.util.find_spec("safety_db")  # not imported: its __init__ opens a bad path
    if spec is None or spec.origin is None:
        return None
    data = json.loads((Path(spec.origin).parent / "insecure_full.json").read_text())
    stamp = data.get("$meta", {}).get("timestamp")
    date = datetime.fromtimestamp(stamp, UTC).date().isoformat() if stamp else "unknown date"
    return data, date


def dependency_version(dep: dict[str, Any]) -> str:
    """A skipped dependency has no version field: its skip reason ends with "(version)"."""
    if dep.get("version"):
        return str(dep["version"])
    found = re.search(r"\(([^()]+)\)\s*$", str(dep.get("skip_reason", "")))
    return found.group(1) if found else "0"


def offline_audit(deps: list[dict[str, Any]], database: dict[str, Any]) -> list[str]:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    found = []
    for dep in deps:
        name = str(dep["name"]).lower().replace("_", "-")
        version = dependency_version(dep)
        for advisory in database.get(name, []):
            try:
                hit = any(Version(version) in SpecifierSet(s) for s in advisory["specs"])
            except (InvalidVersion, ValueError):
                continue
            if hit:
                found.append(f"{name} {version}: {advisory.get('cve') or advisory['id']}")
    return found


def audit(function: str, root: Path = ROOT) -> Check:
    requirements = root / "functions" / function / "requirements.txt"
    name = f"dependency audit functions/{function}/requirements.txt"
    report = _pip_audit(requirements, "pypi")
    if isinstance(report, str):
        return Check(name, False, f"pip-audit failed: {report}", unavailable=True)
    audited, skipped = _audited(report)
    vulns = [
        f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v.get('fix_versions', []))})"
        for d in audited
        for v in d.get("vulns", [])
    ]
    if audited:
        summary = (
            f"pip-audit (PyPI): {len(audited)} packages audited, {len(vulns)} known vulnerabilities"
        )
        return Check(name, not vulns, summary, vulns)
    if resolves(OSV_HOST):
        osv = _pip_audit(requirements, "osv")
        if isinstance(osv, dict) and _audited(osv)[0]:
            return audit_report(name, osv, "pip-audit (OSV)")
    unreachable = (
        f"pip-audit could not reach the vulnerability database (PyPI answered 'not found' for all"
        f" {len(skipped)} resolved packages; OSV's service did not answer)"
    )
    return offline_fallback(name, unreachable, skipped)


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def audit_report(name: str, report: dict[str, Any], service: str) -> Check:
    audited, _ = _audited(report)
    vulns = [f"{d['name']} {d['version']}: {v['id']}" for d in audited for v in d.get("vulns", [])]
    summary = f"{service}: {len(audited)} packages audited, {len(vulns)} known vulnerabilities"
    return Check(name, not vulns, summary, vulns)


def offline_fallback(name: str, unreachable: str, deps: list[dict[str, Any]]) -> Check:
    database = offline_database()
    if database is None:
        return Check(
            name,
            True,
            f"{unreachable}; no offline database installed (safety-db)",
            unavailable=True,
        )
    data, date = database
    vulns = offline_audit(deps, data)
    summary = (
        f"{unreachable}; offline: {len(deps)} packages checked against safety-db ({date},"
        f" {len(data) - 1} packages with advisories): {len(vulns)} known vulnerabilities"
    )
    return Check(name, not vulns, summary, vulns)


# -- registry writes ------------------------------------------------------------------------------
def _put(url: str, body: dict[str, Any], authorization: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return requests.put(url, data=json.dumps(body), headers=headers, timeout=30).status_code


def _credentials(stack: Any) -> dict[str, tuple[str | None, int]]:
    """Each bad credential and the status the registry must answer."""
    mint = stack.mint_token
    return {
        "no token": (None, 401),
        "not a JWT": ("Bearer not.a.jwt", 401),
        "Basic auth": ("Basic d3JpdGVyOng=", 401),
        "unknown signer": (f"Bearer {mint(WRITER, signer='other')}", 401),
        "expired": (f"Bearer {mint(WRITER, expires_in=-3600)}", 401),
        "wrong audience": (f"Bearer {mint(WRITER, audience='https://elsewhere.test')}", 401),
        "not on the allowlist": (f"Bearer {mint('intruder@tally.test')}", 403),
    }


def _registry_objects(stack: Any, workflow: str) -> list[str]:
    client = stack.storage_client()
    names = [
        b.name for b in client.list_blobs(stack.registry_bucket, prefix=f"workflows/{workflow}/")
    ]
    names += [
        b.name for b in client.list_blobs(stack.registry_bucket, prefix=f"defaults/{workflow}.json")
    ]
    return names


def registry_writes(stack: Any) -> Check:
    workflow = f"sec-{uuid.uuid4().hex[:8]}"
    base = f"{stack.registry_url}/workflows/{workflow}"
    spec = {"workflow": workflow, "version": "1.0.0", "expected_outputs": [{"path": "a.txt"}]}
    writes = {
        "PUT version": (f"{base}/versions/1.0.0", spec),
        "PUT default": (f"{base}/default", {"version": "1.0.0"}),
    }
    wrong: list[str] = []
    tried = 0
    for label, (url, body) in writes.items():
        for case, (authorization, status) in _credentials(stack).items():
            got = _put(url, body, authorization)
            tried += 1
            if got != status:
                wrong.append(f"{label} with {case}: {got}, expected {status}")
    leaked = _registry_objects(stack, workflow)
    wrong += [f"written without a valid token: {name}" for name in leaked]
    good = _put(writes["PUT version"][0], spec, f"Bearer {stack.mint_token(WRITER)}")
    if good != 201:
        wrong.append(f"a valid writer's token was refused: {good}")
    summary = (
        f"{tried} writes with a missing, malformed, forged, expired, mis-addressed or"
        f" non-allowlisted token: {tried - len([w for w in wrong if 'expected' in w])} refused"
        f" 401/403 as required, {len(leaked)} objects written; a valid writer's token: {good}"
    )
    return Check(
        "registry refuses writes without a valid writer's token", not wrong, summary, wrong
    )


def static_checks(root: Path = ROOT) -> list[Check]:
    """The checks that need no platform: checkov and the audits (about 25 CPU-seconds). Not
    niced: beside a loaded run at the lowest priority they starve."""
    return [checkov(root)] + [audit(function, root) for function in FUNCTIONS]


def run_security(stack: Any, root: Path = ROOT, static: list[Check] | None = None) -> list[Check]:
    """Every check; ``static``: the platform-free ones, already run (see `static_checks`)."""
    checks = static_checks(root) if static is None else list(static)
    checks.append(registry_writes(stack))
    return checks
