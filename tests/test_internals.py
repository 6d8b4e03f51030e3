"""The grpclib and h2 internals people.rpc relies on exist, and only one module touches them."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from people.rpc import internals
from people.rpc.internals import RELIED_ON, RELIED_ON_FUNCTIONS

INTERNALS = Path(internals.__file__).resolve().parent
PACKAGE = INTERNALS.parents[1]
#: grpclib modules with no documented API: only people/rpc/internals/ imports them.
INTERNAL_MODULES = ("grpclib.protocol", "grpclib.utils")


def assigned_attributes(cls: type) -> set[str]:
    """Names a class or its bases assign as ``self.NAME = ...`` or declare in the class body."""
    found: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        found.update(getattr(klass, "__annotations__", {}))
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source)):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    found.add(target.attr)
    return found


RELIED_ON_NAMES = [
    pytest.param(cls, name, id=f"{cls.__module__}.{cls.__qualname__}.{name}")
    for cls, names in RELIED_ON.items()
    for name in names
]


class TestReliedOn:
    @pytest.mark.parametrize(("cls", "name"), RELIED_ON_NAMES)
    def test_attribute_exists(self, cls: type, name: str) -> None:
        """Every internal attribute people.rpc uses is still defined by the installed package."""
        present = hasattr(cls, name) or name in assigned_attributes(cls)
        assert present, (
            f"{cls.__module__}.{cls.__qualname__}.{name} is gone from the installed"
            f" {cls.__module__.split('.')[0]}; people/rpc/internals/ relies on it"
        )

    @pytest.mark.parametrize(
        ("module", "name"),
        [(module, name) for module, names in RELIED_ON_FUNCTIONS.items() for name in names],
    )
    def test_function_exists(self, module: str, name: str) -> None:
        """Every private function people.rpc calls is still defined by the installed package."""
        assert hasattr(importlib.import_module(module), name), (
            f"{module}.{name} is gone; people/rpc/internals/ relies on it"
        )

    def test_the_check_can_fail(self) -> None:
        """A name no class has is reported missing (the check above is not vacuous)."""
        cls = next(iter(RELIED_ON))
        assert not hasattr(cls, "_no_such_attribute")
        assert "_no_such_attribute" not in assigned_attributes(cls)


def private_uses(path: Path) -> list[str]:
    """Imports of grpclib's internal modules and reads of relied-on private names in a file."""
    names = {name for group in RELIED_ON.values() for name in group if name.startswith("_")}
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            private = [alias.name for alias in node.names if alias.name.startswith("_")]
            if node.module.startswith(INTERNAL_MODULES) or (
                node.module.startswith(("grpclib", "h2")) and private
            ):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in names:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


class TestOnePlace:
    def test_only_internals_touches_them(self) -> None:
        """Only people/rpc/internals/ imports grpclib internals or reads their privates."""
        offenders = {
            str(path.relative_to(PACKAGE)): uses
            for path in sorted(PACKAGE.rglob("*.py"))
            if "_gen" not in path.parts
            and INTERNALS not in path.parents
            and (uses := private_uses(path))
        }
        assert offenders == {}

    def test_internals_itself_is_seen(self) -> None:
        """The scan does find the private uses inside people/rpc/internals/ (it is not vacuous)."""
        assert any(private_uses(path) for path in INTERNALS.glob("*.py"))


class TestPins:
    @pytest.mark.parametrize("package", ["grpclib", "h2", "hpack", "hyperframe"])
    def test_pinned_exactly_to_what_is_installed(self, package: str) -> None:
        """Packages whose internals the runtime uses are pinned with == to the tested version."""
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        pins = [
            requirement
            for requirement in project["project"]["dependencies"]
            if re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0] == package
        ]
        assert pins == [f"{package}=={importlib.metadata.version(package)}"]
