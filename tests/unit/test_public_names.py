"""Each package's public names: every module of tally_handler, tally_registry and tally_cli
declares ``__all__``, every name in it exists, and nothing outside a package uses a name of it
that is private or not exported (imports, and attributes of an imported module)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest
import tally_handler
import tally_registry

import tally_cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGES: dict[str, ModuleType] = {
    "tally_handler": tally_handler,
    "tally_registry": tally_registry,
    "tally_cli": tally_cli,
}
# Not sources: the platform's state, the virtualenv, and what building the wheels leaves behind
# (`build/lib` holds a copy of the handler as it was when test_cli_wheel built it).
SKIP_DIRS = {".venv", ".build", ".devstack", ".git", "node_modules", "build", "dist"}
# White-box uses, each with its reason; keep this short.
WHITE_BOX = {
    # Tests render a log line exactly as the handler prints one.
    "tally_handler.app._log",
    "tally_handler.app._with_latency",
    # A test injects a bug into the parser: its rejection must say "bug in tally".
    "tally_handler.delivery._Parser",
    # The registry benchmark swaps the Api the entry point builds on first use.
    "tally_registry.entry._api",
}


def modules(package: ModuleType) -> dict[str, ModuleType]:
    found = {package.__name__: package}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "__main__":  # runs the program when imported
            continue
        name = f"{package.__name__}.{info.name}"
        found[name] = importlib.import_module(name)
    return found


MODULES = {name: m for package in PACKAGES.values() for name, m in modules(package).items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_declares_what_it_exports(name: str) -> None:
    module = MODULES[name]
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list | tuple), f"{name} declares no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"


def package_dir(name: str) -> Path:
    return Path(PACKAGES[name].__path__[0])


def outside_sources() -> list[Path]:
    """Every Python file of the repository outside the package a name belongs to is checked per
    use; here: every file, the packages' own included (their files are skipped per package)."""
    return [p for p in ROOT.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]


def uses(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for each name taken from a package module: `from m import name`, and
    `alias.name` where alias is an imported package module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, str, int]] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:
                    aliases[alias.asname or alias.name] = submodule
                else:
                    found.append((node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            found.append((aliases[node.value.id], node.attr, node.lineno))
    return found


def test_nothing_outside_a_package_uses_its_private_or_unexported_names() -> None:
    problems = []
    for path in outside_sources():
        for module, name, line in uses(path):
            package = module.split(".")[0]
            if path.is_relative_to(package_dir(package)) or module not in MODULES:
                continue
            if name.startswith("__") or f"{module}.{name}" in WHITE_BOX:
                continue  # dunders (__file__, __doc__) are every module's
            if name not in getattr(MODULES[module], "__all__", ()):
                where = path.relative_to(ROOT)
                problems.append(f"{where}:{line}: {module}.{name}")
    assert not problems, "export these (add to __all__) or stop using them:\n" + "\n".join(problems)


def test_the_checker_sees_imports_and_attributes(tmp_path: Path) -> None:
    source = tmp_path / "user.py"
    source.write_text(
        "from tally_cli.config import _text, SETTINGS\n"
        "from tally_cli import config as c\n"
        "c._BY_FIELD\n"
    )
    assert {(m, n) for m, n, _ in uses(source)} == {
        ("tally_cli.config", "_text"),
        ("tally_cli.config", "SETTINGS"),
        ("tally_cli.config", "_BY_FIELD"),
    }
