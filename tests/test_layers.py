"""The package's layers point one way: ``get`` and ``pl`` read results, and never import ``tl``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gbumap

SRC = Path(gbumap.__file__).parent


def imported_modules(text: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every module an import in ``text`` may load, relative imports resolved.

    ``package`` is the dotted package of the module (``"gbumap.pl"``). ``from a import b`` counts as
    ``a`` and ``a.b`` (``b`` may be a submodule).
    """
    parts = package.split(".")
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def is_tl(module: str) -> bool:
    return module == "gbumap.tl" or module.startswith("gbumap.tl.")


def test_get_and_pl_never_import_tl():
    upward = []
    for layer in ("get", "pl"):
        for path in sorted((SRC / layer).rglob("*.py")):
            package = ".".join(["gbumap", *path.relative_to(SRC).parent.parts])
            upward += [
                f"{path.relative_to(SRC)}:{line} imports {module}"
                for line, module in imported_modules(path.read_text(), package)
                if is_tl(module)
            ]
    assert not upward, "get and pl must not import gbumap.tl; move what they share below it:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    "text, upward",
    [
        ("from ..tl import rank_features", True),
        ("from ..tl._rank import SCORES", True),
        ("from .. import tl", True),
        ("import gbumap.tl", True),
        ("from gbumap.tl._contrast import contrast", True),
        ("from gbumap import tl", True),
        ("def f():\n    from ..tl import contrast\n", True),  # imports inside functions count too
        ("from .._ranking import SCORES", False),
        ("from ..get import rank_features_df", False),
        ("from . import _utils", False),
    ],
)
def test_the_scan_sees_every_spelling_of_an_import(text, upward):
    assert any(is_tl(m) for _, m in imported_modules(text, "gbumap.pl")) is upward
