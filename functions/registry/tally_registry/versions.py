"""A total order on version names, used to pick a workflow's default version.

Order (ascending): names that are not semantic versions, by natural sort (digit runs compared as
numbers, letters case-insensitively), then semantic versions (semver.org 2.0 precedence: a
pre-release sorts below its release). Ties, such as `1.01` and `1.1`, are broken by the raw
string so that two distinct names never compare equal. The highest version is the last one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["SortKey", "highest", "is_semver", "sort_versions", "version_key"]

_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(rf"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-({_IDENT}(?:\.{_IDENT})*))?$")
_DIGITS = re.compile(r"(\d+)")

SortKey = tuple[object, ...]


def is_semver(name: str) -> bool:
    return _SEMVER.match(name) is not None


def _natural(text: str) -> tuple[tuple[int, int, str], ...]:
    parts = []
    for i, chunk in enumerate(_DIGITS.split(text)):
        if not chunk:
            continue
        # Digit runs sit at odd indexes of re.split with a capturing group.
        parts.append((0, int(chunk), chunk) if i % 2 else (1, 0, chunk.lower()))
    return tuple(parts)


def version_key(name: str) -> SortKey:
    """Sort key of a version name; `sorted(names, key=version_key)` is ascending."""
    m = _SEMVER.match(name)
    if m is None:
        return (0, _natural(name), name)
    major, minor, patch, pre = m.groups()
    if pre is None:
        pre_key: tuple[object, ...] = (1,)  # a release outranks its pre-releases
    else:
        idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        pre_key = (0, idents)
    return (1, (int(major), int(minor), int(patch), pre_key), name)


def sort_versions(names: Iterable[str]) -> list[str]:
    return sorted(names, key=version_key)


def highest(names: Iterable[str]) -> str | None:
    return max(names, key=version_key, default=None)
