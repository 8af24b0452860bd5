"""Configuration, read once from environment variables (docs/design.md, "Registry")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tally_registry.errors import ConfigError

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


@dataclass(frozen=True)
class Config:
    bucket: str
    audience: str
    writers: frozenset[str] = frozenset()
    certs_url: str = GOOGLE_CERTS_URL
    list_ttl: float = 10.0
    emulator_host: str | None = None
    project: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        def required(name: str, meaning: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"{name} is not set: set it to {meaning} (docs/design.md)")
            return value

        ttl_text = env.get("TALLY_REGISTRY_LIST_TTL_SECONDS", "").strip() or "10"
        try:
            ttl = float(ttl_text)
        except ValueError:
            ttl = -1.0
        if not 0 <= ttl <= 86400:
            raise ConfigError(
                f"TALLY_REGISTRY_LIST_TTL_SECONDS={ttl_text!r} is not a number of seconds "
                "between 0 and 86400"
            )
        writers = env.get("TALLY_REGISTRY_WRITERS", "")
        return cls(
            bucket=required("TALLY_REGISTRY_BUCKET", "the bucket holding the specs"),
            audience=required(
                "TALLY_REGISTRY_AUDIENCE", "the registry's own URL (writers' token audience)"
            ),
            writers=frozenset(w.strip().lower() for w in writers.split(",") if w.strip()),
            certs_url=env.get("TALLY_REGISTRY_CERTS_URL", "").strip() or GOOGLE_CERTS_URL,
            list_ttl=ttl,
            emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
            project=env.get("GOOGLE_CLOUD_PROJECT") or None,
        )
