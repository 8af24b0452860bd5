"""Sample runs: the object names a workflow version's outputs would have, for demos, tests,
benchmarks and the chaos suite."""

from __future__ import annotations

import random
import re
from typing import Any


def _fill_pattern(pattern: str, index: int, width: int) -> str:
    """A name matching a glob pattern: `*` becomes a zero-padded index, `?` a digit."""
    name = pattern.replace("**/", "").replace("*", f"{index:0{width}d}", 1).replace("*", "x")
    name = re.sub(r"\[([^\]]+)\]", lambda m: m.group(1).lstrip("!^")[0], name)
    return name.replace("?", str(index % 10))


def output_paths(spec: dict[str, Any], include_optional: bool = True) -> list[str]:
    """Every output path a complete run of this spec writes, patterns expanded to their count."""
    paths: list[str] = []
    for expected in spec["expected_outputs"]:
        if not expected.get("required", True) and not include_optional:
            continue
        if "path" in expected:
            paths.append(expected["path"])
        else:
            count = int(expected["count"])
            width = max(5, len(str(count)))
            paths.extend(_fill_pattern(expected["pattern"], i, width) for i in range(count))
    return paths


def shuffled(paths: list[str], rng: random.Random) -> list[str]:
    out = list(paths)
    rng.shuffle(out)
    return out


def exact_spec(workflow: str, version: str, n: int, deadline_minutes: int | None = None) -> dict:
    """A spec of n exact outputs, for scale tests and benchmarks."""
    spec: dict[str, Any] = {
        "workflow": workflow,
        "version": version,
        "description": f"{n} exact outputs",
        "expected_outputs": [{"path": f"out/part-{i:05d}.txt"} for i in range(n)],
    }
    if deadline_minutes is not None:
        spec["deadline_minutes"] = deadline_minutes
    return spec
