"""Fixtures of the offline Terraform checks."""

from __future__ import annotations

import pytest

from tests.terraform import tfmodel


@pytest.fixture(scope="session")
def module() -> tfmodel.Module:
    return tfmodel.load_module()


def pytest_terminal_summary(terminalreporter) -> None:
    """Figures the Terraform tests want seen without -s (e.g. how much the schema check covered)."""
    for line in tfmodel.SUMMARY:
        terminalreporter.write_line(line)
