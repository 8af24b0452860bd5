"""The registry's HTTP API as the CLI uses it: reads, and idempotent registration of specs.

Tokens: `--token` / TALLY_REGISTRY_TOKEN when given; else, for a registry on https, a Google ID
token whose audience is the registry URL (google-auth, falling back to `gcloud auth
print-identity-token`); a local http registry gets no token for reads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from tally_cli.clients import dependency
from tally_cli.config import Settings
from tally_cli.errors import CheckFailed, ConfigError, TallyError, Unreachable

__all__ = ["LOCAL_HOSTS", "Registration", "Registry", "spec_files", "spec_names"]

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass
class Registration:
    """What happened to one spec file."""

    file: str
    workflow: str | None
    version: str | None
    result: str  # created | unchanged | conflict | invalid | unauthorized | error
    status: int | None
    message: str

    @property
    def ok(self) -> bool:
        return self.result in ("created", "unchanged")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _error_text(resp: Any) -> str:
    try:
        error = resp.json()["error"]
    except (ValueError, KeyError, TypeError):
        return resp.text.strip()[:300] or resp.reason
    text = str(error.get("message", ""))
    details = error.get("details") or []
    problems = [
        f"{d.get('pointer', '')}: {d.get('message', '')}"
        for d in details
        if isinstance(d, dict) and "message" in d
    ]
    return text + ("" if not problems else " [" + "; ".join(problems) + "]")


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.require("registry_url")
        self._token: str | None = settings.registry_token
        self._session: Any = None

    @property
    def local(self) -> bool:
        return urlparse(self.url).hostname in LOCAL_HOSTS

    def token(self) -> str | None:
        if self._token or self.local:
            return self._token
        self._token = _id_token(self.url)
        return self._token

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        import requests

        if self._session is None:
            self._session = requests.Session()
        headers = {"Accept": "application/json"}
        token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        with dependency(self.settings, "registry"):
            resp = self._session.request(
                method, self.url + path, data=body, headers=headers, timeout=self.settings.timeout
            )
        if resp.status_code >= 500:
            raise Unreachable(
                f"the registry at {self.settings.where('registry_url')} answered "
                f"{resp.status_code}: {_error_text(resp)}; retry later, or read its logs"
            )
        if resp.status_code in (401, 403):
            raise CheckFailed(
                f"the registry refused the request ({resp.status_code}): {_error_text(resp)}; "
                "pass --token or set TALLY_REGISTRY_TOKEN (in the cloud: an account allowed to "
                "invoke the registry, and for writes listed in TALLY_REGISTRY_WRITERS)"
            )
        return resp

    def _get(self, path: str, missing: str) -> Any:
        resp = self._request("GET", path)
        if resp.status_code == 404:
            raise CheckFailed(f"{missing}: {_error_text(resp)}")
        if resp.status_code != 200:
            raise CheckFailed(f"GET {path} answered {resp.status_code}: {_error_text(resp)}")
        return resp.json()

    def workflows(self) -> list[dict[str, Any]]:
        return list(self._get("/workflows", "the registry lists no workflows").get("workflows", []))

    def workflow(self, name: str) -> dict[str, Any]:
        return self._get(
            f"/workflows/{quote(name, safe='')}", f"workflow {name!r} is not registered"
        )

    def spec(self, workflow: str, version: str) -> dict[str, Any] | None:
        """The spec of a version, or None when the registry does not know it."""
        resp = self._request(
            "GET", f"/workflows/{quote(workflow, safe='')}/versions/{quote(version, safe='')}"
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise CheckFailed(f"the registry answered {resp.status_code}: {_error_text(resp)}")
        doc = resp.json()
        return doc["spec"] if isinstance(doc, dict) and isinstance(doc.get("spec"), dict) else doc

    def register(self, path: Path) -> Registration:
        """PUT one spec file; never raises for a problem of that file alone."""
        try:
            doc = json.loads(path.read_bytes())
        except OSError as exc:
            return Registration(str(path), None, None, "invalid", None, f"cannot read: {exc}")
        except ValueError as exc:
            return Registration(str(path), None, None, "invalid", None, f"not JSON: {exc}")
        workflow, version = spec_names(doc, path)
        if not workflow or not version:
            return Registration(
                str(path),
                workflow,
                version,
                "invalid",
                None,
                "the spec needs 'workflow' and 'version' "
                "(or a path workflows/<workflow>/<version>.json)",
            )
        body = json.dumps(doc).encode()
        target = f"/workflows/{quote(workflow, safe='')}/versions/{quote(version, safe='')}"
        try:
            resp = self._request("PUT", target, body)
        except CheckFailed as exc:  # 401/403: this file and every other one
            return Registration(str(path), workflow, version, "unauthorized", None, str(exc))
        results = {201: "created", 200: "unchanged", 409: "conflict", 400: "invalid"}
        result = results.get(resp.status_code, "error")
        message = {
            "created": f"registered {workflow} {version}",
            "unchanged": f"{workflow} {version} is already registered with this content",
        }.get(result) or _error_text(resp)
        return Registration(str(path), workflow, version, result, resp.status_code, message)


def spec_names(doc: Any, path: Path) -> tuple[str | None, str | None]:
    workflow = doc.get("workflow") if isinstance(doc, dict) else None
    version = doc.get("version") if isinstance(doc, dict) else None
    # workflows/<workflow>/<version>.json names them when the document does not.
    return (
        workflow if isinstance(workflow, str) else path.parent.name or None,
        version if isinstance(version, str) else path.stem or None,
    )


def spec_files(paths: list[Path]) -> list[Path]:
    """Files as given; a directory stands for every *.json below it (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob("*.json")))
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such file or directory")
    if not found:
        raise ConfigError("no spec files found: name files workflows/<workflow>/<version>.json")
    return found


def _id_token(audience: str) -> str:
    """A Google ID token for `audience`: service account / metadata server, else gcloud."""
    from google.auth import exceptions as auth
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    try:
        return str(id_token.fetch_id_token(Request(), audience))
    except auth.GoogleAuthError as exc:
        reason = " ".join(str(exc).split())[:200]
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            done = subprocess.run(
                [gcloud, "auth", "print-identity-token"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            if done.stdout.strip():
                return done.stdout.strip()
        except (subprocess.SubprocessError, OSError) as exc:
            reason = f"{reason}; gcloud: {exc}"
    raise TallyError(
        f"no ID token for the registry ({reason}): pass --token "
        '"$(gcloud auth print-identity-token)" or set TALLY_REGISTRY_TOKEN'
    )
