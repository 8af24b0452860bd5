"""The Google adapters and the in-memory doubles take each port's calls with its signature.

No type checker runs on the tree, so this test is what keeps the three copies of each signature
(ports, adapters, memory) in step: a parameter renamed, added or reordered in one fails here.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from tally_handler import adapters, memory, ports

IMPLEMENTATIONS = [
    (ports.Storage, adapters.StorageGateway),
    (ports.Storage, memory.MemoryStorage),
    (ports.Storage, ports.SharedReads),
    (ports.Publisher, adapters.PubSubPublisher),
    (ports.Publisher, memory.MemoryPublisher),
    (ports.EventLog, adapters.EventLog),
    (ports.EventLog, memory.MemoryEventLog),
]


def _calls(port: type) -> list[str]:
    return [n for n, value in vars(port).items() if inspect.isfunction(value) and n[0] != "_"]


@pytest.mark.parametrize(
    ("port", "implementation"),
    IMPLEMENTATIONS,
    ids=[f"{impl.__module__.rsplit('.', 1)[-1]}.{impl.__name__}" for _, impl in IMPLEMENTATIONS],
)
def test_an_implementation_has_its_ports_signatures(port: type, implementation: Any) -> None:
    calls = _calls(port)
    assert calls, f"{port.__name__} declares no calls"
    for name in calls:
        expected = inspect.signature(getattr(port, name))
        actual = inspect.signature(getattr(implementation, name))
        assert actual == expected, f"{implementation.__name__}.{name}{actual} != {expected}"
