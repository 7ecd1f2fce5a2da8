"""The tutorial notebooks run end to end, offline, on bundled data.

Each notebook in ``tutorials/`` is executed from a fresh kernel of this
interpreter in a temporary folder, so nothing is written into the repository.
The executed copies that the documentation shows (``docs/tutorials/``, made by
``python tutorials/execute.py``) must match the current sources cell for cell
and contain no errors.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]


def _load_runner():
    """``tutorials/execute.py`` as a module, compiled in memory (no ``__pycache__`` in the repository)."""
    path = ROOT / "tutorials" / "execute.py"
    module = types.ModuleType("gbumap_tutorial_runner")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


runner = _load_runner()
NOTEBOOKS = runner.notebooks()


def test_there_are_tutorials():
    assert {p.stem for p in NOTEBOOKS} >= {"basic_usage", "bone_marrow", "save_load_query", "reading_contributions"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_sources_have_no_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, (
        f"{path.name}: cells {with_outputs} carry outputs; keep tutorials/ clean with "
        "`python tutorials/execute.py --strip`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_docs_copy_is_current(path):
    import nbformat

    executed = runner.DOCS_DIR / path.name
    assert executed.exists(), f"docs/tutorials/{path.name} is missing; run `python tutorials/execute.py {path.stem}`"
    source = nbformat.read(path, as_version=4)
    shown = nbformat.read(executed, as_version=4)
    assert runner.same_cells(source, shown), (
        f"docs/tutorials/{path.name} is older than tutorials/{path.name}; run `python tutorials/execute.py {path.stem}`"
    )
    for i, cell in enumerate(shown.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"cell {i} of docs/tutorials/{path.name} was not executed"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"cell {i} of docs/tutorials/{path.name} shows an error: {errors[0].ename}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs(path, tmp_path):
    before = sorted(p.name for p in path.parent.iterdir())
    nb = runner.execute(path, workdir=tmp_path)  # raises CellExecutionError on a failing cell
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
    assert sorted(p.name for p in path.parent.iterdir()) == before, "the tutorial wrote into tutorials/"
