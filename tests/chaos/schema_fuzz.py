"""schemathesis against the registry's OpenAPI document, with a larger budget than `make test`
(tests/integration/test_registry_http.py runs the same checks with 30 examples per operation).

The run writes with a writer's token (random workflows, and the documented examples on the sample
workflows); the samples are put back as they were afterwards.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITER = "writer@tally.test"
SAMPLES = (
    "workflows/variant-calling/",
    "workflows/rna-seq/",
    "defaults/variant-calling.json",
    "defaults/rna-seq.json",
)


# schemathesis's negative_data_rejection expects these statuses for data the schema forbids; the
# registry also answers 413 (documented in openapi.json) to a body over 1 MiB, which is how a
# spec with more than 10,000 expected outputs usually arrives.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]
"""


@dataclass
class SchemaFuzzReport:
    ok: bool
    max_examples: int
    seconds: float
    summary: str
    tail: str


def _snapshot(stack: Any) -> dict[str, bytes]:
    client = stack.storage_client()
    return {
        b.name: b.download_as_bytes()
        for prefix in SAMPLES
        for b in client.list_blobs(stack.registry_bucket, prefix=prefix)
    }


def _restore(stack: Any, before: dict[str, bytes]) -> None:
    bucket = stack.storage_client().bucket(stack.registry_bucket)
    for name, data in _snapshot(stack).items():
        if name not in before:
            bucket.blob(name).delete()
        elif data != before[name]:
            bucket.blob(name).upload_from_string(before[name], content_type="application/json")


def _summary(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    wanted = re.compile(r"(passed|failed|error|operations|test cases|generated)", re.IGNORECASE)
    picked = [line for line in lines[-40:] if wanted.search(line)]
    return " | ".join(picked[-4:]) or (lines[-1] if lines else "no output")


def run_schemathesis(stack: Any, max_examples: int, seed: int) -> SchemaFuzzReport:
    exe = Path(sys.executable).parent / "schemathesis"
    started = time.monotonic()
    before = _snapshot(stack)
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "schemathesis.toml"
        config.write_text(CONFIG)
        argv = [
            str(exe),
            "--config-file",
            str(config),
            "run",
            f"{stack.registry_url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",  # a valid spec is refused when it disagrees with the URL
            "--max-examples",
            str(max_examples),
            "--header",
            f"Authorization: Bearer {stack.mint_token(WRITER, expires_in=7200)}",
            "--request-timeout",
            "10",
            "--workers",
            "2",
            "--seed",
            str(seed),
            "--no-color",
        ]
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=1200, cwd=workdir, check=False
            )
        finally:
            _restore(stack, before)
    output = out.stdout + out.stderr
    return SchemaFuzzReport(
        out.returncode == 0,
        max_examples,
        time.monotonic() - started,
        _summary(out.stdout),
        output[-6000:],
    )
