"""The layout's rules that import-linter cannot see: the gate's privates stay its own, one error root, small modules."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import gatekeeper
from gatekeeper.errors import GatekeeperError

PACKAGE = Path(gatekeeper.__file__).parent
GATE = PACKAGE / "gate.py"
#: The emulator keeps its own errors (Twilio's error bodies, its control API's); it is not the product.
SANDBOX = PACKAGE / "sandbox"


def product_modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if SANDBOX not in path.parents:
            yield path


def gate_private_names() -> set[str]:
    """Every private method and attribute of Gatekeeper, read from gate.py."""
    tree = ast.parse(GATE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Gatekeeper")
    names = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return {n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}


def private_uses(source: str, names: set[str]) -> list[str]:
    """Places in ``source`` that reach one of ``names`` on anything but ``self``/``cls`` (or by getattr)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr"):
            args = node.args
            if len(args) > 1 and isinstance(args[1], ast.Constant) and args[1].value in names:
                found.append((node.lineno, f"{node.func.id}(..., {args[1].value!r})"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_the_gate_has_private_parts_to_guard() -> None:
    """The guard below reads real names: the gate's own decision path is private."""
    names = gate_private_names()
    assert {"_decide", "_again", "_once"} <= names, names


def test_the_private_check_catches_a_reach_into_the_gate() -> None:
    """A module calling gate._decide, reading self._gate._again or getattr(gate, "_once") is caught."""
    names = gate_private_names()
    source = "gate._decide(1)\nx = self._gate._again\ny = getattr(g, '_once')\nself._decide()\n"
    assert private_uses(source, names) == ["line 1: ._decide", "line 2: ._again", "line 3: getattr(..., '_once')"]


def test_no_module_outside_the_gate_touches_its_private_names() -> None:
    """Adapters, webhooks, batch and CLI use only the gate's public API."""
    names = gate_private_names()
    offenders = {
        str(path.relative_to(PACKAGE.parent)): uses
        for path in [*product_modules(), *sorted((PACKAGE.parent / "examples").glob("*.py"))]
        if path != GATE and (uses := private_uses(path.read_text(), names))
    }
    assert offenders == {}


def defined_exceptions() -> Iterator[type[BaseException]]:
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="gatekeeper."):
        if info.name.startswith("gatekeeper.sandbox"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                yield obj


def test_every_exception_the_package_defines_is_a_gatekeeper_error() -> None:
    """One error root: each exception class defined outside the emulator derives from GatekeeperError."""
    defined = set(defined_exceptions())
    assert len(defined) >= 10  # the walk found the package's errors, not nothing
    assert sorted(c.__qualname__ for c in defined if not issubclass(c, GatekeeperError)) == []


def test_no_bare_builtin_exception_is_raised() -> None:
    """Every raise names one of Gatekeeper's errors (or re-raises), never a bare ValueError or TypeError."""
    builtin_errors = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    builtin_errors.discard("SystemExit")  # how a console script hands back its exit status
    offenders = []
    for path in product_modules():
        tree = ast.parse(path.read_text())
        # A __getattr__ answers a missing name with AttributeError: the protocol hasattr() and import rely on.
        protocol = {
            id(raised)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
            for raised in ast.walk(fn)
            if isinstance(raised, ast.Raise)
            and isinstance(raised.exc, ast.Call)
            and isinstance(raised.exc.func, ast.Name)
            and raised.exc.func.id == "AttributeError"
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and id(node) not in protocol:
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id in builtin_errors:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {func.id}")
    assert offenders == []


def test_modules_stay_small() -> None:
    """Modules are split before 600 lines, and the gate itself stays under 350."""
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n >= 600} == {}
    assert sizes["gatekeeper/gate.py"] < 350
