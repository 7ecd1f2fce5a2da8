"""Packaging promises: a light import, the CLI, and the pynndescent pin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_is_light():
    out = _run(
        "import time, sys; t = time.perf_counter(); import gbumap; dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'lightning', 'pynndescent', 'umap', 'bokeh', 'scanpy') if m in sys.modules]; "
        "print(dt); print(','.join(heavy))"
    )
    seconds, heavy = out.strip().split("\n") if "\n" in out.strip() else (out.strip(), "")
    assert float(seconds) < 2.0
    assert heavy == ""


def test_scanpy_is_not_slowed_by_gbumap():
    """After scanpy, importing gbumap and its tl/get modules adds only milliseconds."""
    out = _run(
        "import time, sys; import scanpy; before = set(sys.modules); t = time.perf_counter(); "
        "import gbumap, gbumap.tl, gbumap.get; dt = time.perf_counter() - t; "
        "new = sorted(m for m in set(sys.modules) - before if not m.startswith('gbumap')); "
        "print(dt); print(','.join(new))"
    )
    lines = out.strip().split("\n")
    assert float(lines[0]) < 0.3
    added = lines[1].split(",") if len(lines) > 1 and lines[1] else []
    assert not [m for m in added if m.split(".")[0] in ("torch", "lightning", "pynndescent", "umap", "sklearn")]


def test_cli_help():
    from gbumap.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    script = Path(sys.executable).parent / "gbumap"  # the console script installed beside this Python
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "fit" in out


@pytest.mark.slow
def test_scanpy_neighbors_above_4k_cells():
    """pynndescent 0.7.0 broke sc.pp.neighbors above ~4k cells; our pin keeps it working."""
    import anndata as ad
    import scanpy as sc

    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(4500, 20)).astype(np.float32))
    sc.pp.neighbors(adata, use_rep="X", n_neighbors=15)
    assert adata.obsp["connectivities"].shape == (4500, 4500)
    assert adata.obsp["connectivities"].nnz > 4500 * 10


def test_every_public_function_is_on_the_api_page():
    import gbumap

    page = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    listed = {line.strip() for line in page.splitlines() if line.startswith("   ")}
    missing = [
        f"{module}.{name}"
        for module in ("tl", "get", "pl")
        for name in getattr(gbumap, module).__all__
        if f"{module}.{name}" not in listed
    ]
    # deprecated aliases of get functions stay off the page
    missing = [name for name in missing if name not in ("pl.mean_contributions", "pl.top_feature_groups")]
    assert not missing, f"public functions missing from docs/api.md: {missing}"


def test_tl_modules_export_what_they_define():
    """Every top-level name a ``gbumap.tl`` module defines is in its ``__all__`` or private (a leading underscore).

    ``__all__`` may also re-export a name the module imports.
    """
    import ast
    import importlib

    import gbumap.tl

    problems = []
    for path in sorted(Path(gbumap.tl.__file__).parent.glob("_*.py")):
        if path.name == "__init__.py":
            continue
        defined, imported = set(), set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined.update(t.id for t in node.targets if isinstance(t, ast.Name) and t.id != "__all__")
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        exported = set(importlib.import_module(f"gbumap.tl.{path.stem}").__all__)
        public = {name for name in defined if not name.startswith("_")}
        unbound = exported - defined - imported
        if public - exported or unbound:
            problems.append(f"{path.name}: not in __all__ {sorted(public - exported)}, "
                            f"in __all__ but not defined or imported {sorted(unbound)}")
    assert not problems, problems
