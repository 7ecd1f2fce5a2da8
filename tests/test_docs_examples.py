"""The examples users copy: the README's code blocks and the public docstrings' doctests."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import numpy as np
import pytest

import gbumap

ROOT = Path(__file__).resolve().parents[1]


def _public_objects():
    import gbumap.datasets
    import gbumap.get
    import gbumap.pl
    import gbumap.tl

    yield "GlassBoxUMAP", gbumap.GlassBoxUMAP
    for module in (gbumap.tl, gbumap.get, gbumap.pl, gbumap.datasets):
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name)


def _with_examples():
    finder = doctest.DocTestFinder(recurse=False)
    out = []
    for name, obj in _public_objects():
        tests = [t for t in finder.find(obj, name) if any(not _skipped(ex) for ex in t.examples)]
        out += [pytest.param(t, id=name) for t in tests]
    return out


def _skipped(example: doctest.Example) -> bool:
    return bool(example.options.get(doctest.SKIP))


def test_every_public_function_has_an_example():
    missing = [name for name, obj in _public_objects() if callable(obj) and ">>>" not in (obj.__doc__ or "")]
    assert not missing, f"public objects without an example: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("test", _with_examples())
def test_docstring_examples_run(test, tmp_path, monkeypatch):
    import scanpy as sc

    monkeypatch.chdir(tmp_path)
    test.globs.update({"gbumap": gbumap, "sc": sc, "np": np})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: None)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} examples failed"


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples():
    assert len(_readme_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_examples_run(index, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    code = _readme_blocks()[index]
    namespace: dict = {}
    exec(compile(code, f"README.md block {index + 1}", "exec"), namespace)  # noqa: S102 - our own README
    if "load_digits" in code:  # the drop-in for umap.UMAP
        emb, contrib = namespace["embedding"], namespace["contrib"]
        assert emb.shape == (1797, 2) and contrib.shape == (1797, 2, 64)
        assert np.abs(contrib.sum(-1) - emb).max() < 1e-5 * np.abs(emb).max()
    else:  # the scanpy pipeline
        adata = namespace["adata"]
        assert {"X_gbumap", "gbumap_jacobian"} <= set(adata.obsm) and "rank_features_gbumap" in adata.uns
        written = [p for p in os.listdir(tmp_path) if p.endswith(".h5ad")]
        assert written, "the README example writes its .h5ad"
