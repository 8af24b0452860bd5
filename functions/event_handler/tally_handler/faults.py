"""Test-only fault injection: crash the handler at the step boundaries where real crashes happen.

Setting (off when empty): ``after_listing=0.05,after_claim=0.05,after_publish=0.05,
after_runs_row=0.05,after_mark=0.05,before_logging=0.05;seed=7``: a probability per step, then an
optional seed (default 0). Each instance draws from its own seeded ``random.Random``, so a test run
is reproducible per instance.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = ["Faults", "InjectedFault", "Step"]


class Step(StrEnum):
    AFTER_LISTING = "after_listing"  # completeness decided, nothing written
    AFTER_CLAIM = "after_claim"  # record claimed (bytes fixed), nothing published
    AFTER_PUBLISH = "after_publish"  # published, runs row not written, record not marked
    AFTER_RUNS_ROW = "after_runs_row"  # runs row written, output.json and the mark not
    AFTER_MARK = "after_mark"  # record marked published, still in the open-run index, no event row
    BEFORE_LOGGING = "before_logging"  # everything done but the event row


class InjectedFault(Exception):
    def __init__(self, step: Step | str) -> None:
        super().__init__(f"fault injected {step} (test-only fault injection is on)")
        self.step = Step(step)


@dataclass(frozen=True)
class Faults:
    probabilities: Mapping[Step, float] = field(default_factory=lambda: MappingProxyType({}))
    seed: int = 0
    _random: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_random", random.Random(self.seed))
        object.__setattr__(self, "_lock", threading.Lock())

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """Parse the setting; ValueError names the problem. Empty or None: no faults."""
        text = (text or "").strip()
        if not text:
            return cls()
        steps_text, _, options = text.partition(";")
        probabilities: dict[Step, float] = {}
        for item in filter(None, (part.strip() for part in steps_text.split(","))):
            name, equals, value = item.partition("=")
            name = name.strip()
            if not equals:
                raise ValueError(f"fault setting {item!r} needs the form step=probability")
            if name not in set(Step):
                raise ValueError(f"unknown fault step {name!r}; the steps are {', '.join(Step)}")
            if Step(name) in probabilities:
                raise ValueError(f"fault step {name!r} is given twice")
            probabilities[Step(name)] = _probability(name, value.strip())
        seed = 0
        for option in filter(None, (part.strip() for part in options.split(";"))):
            key, equals, value = option.partition("=")
            if key.strip() != "seed" or not equals:
                raise ValueError(f"fault option {option!r} is unknown; the only one is seed=<int>")
            try:
                seed = int(value.strip())
            except ValueError:
                raise ValueError(f"fault seed {value.strip()!r} is not an integer") from None
        return cls(MappingProxyType(probabilities), seed)

    def maybe_fail(self, step: Step | str) -> None:
        """Raise InjectedFault(step) with the step's configured probability."""
        probability = self.probabilities.get(Step(step), 0.0)
        if probability <= 0.0:
            return
        with self._lock:
            draw = self._random.random()
        if draw < probability:
            raise InjectedFault(step)


def _probability(name: str, value: str) -> float:
    try:
        probability = float(value)
    except ValueError:
        raise ValueError(f"fault probability {value!r} for {name} is not a number") from None
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"fault probability {value} for {name} must be between 0 and 1")
    return probability
