"""Seeded fits are bitwise reproducible on the CPU, within a process and across processes.

(On GPUs, CUDA atomics in the backward pass make runs agree only to ~1e-6;
see the ``random_state`` entry of :class:`gbumap.GlassBoxUMAP`.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
from _two_groups import two_group_adata

import gbumap

FIT = dict(n_steps=30, batch_size=256, n_neighbors=10, verbose=False)


def _data(n=150, g=60, seed=0) -> ad.AnnData:
    return two_group_adata(n, g, n_markers=10, seed=seed)


def _run(seed: int) -> dict[str, np.ndarray]:
    adata = _data()
    # n_pcs=8: the randomised PCA is part of what must be reproducible
    gbumap.tl.glassbox_umap(adata, n_pcs=8, random_state=seed, **FIT)
    model = gbumap.get.model(adata)
    return {
        "embedding": adata.obsm["X_gbumap"],
        "jacobian": adata.obsm["gbumap_jacobian"],
        "contributions": gbumap.get.contributions(adata),
        "components": model.components_,
        "weights": np.concatenate([v.numpy().ravel() for v in model.encoder_.state_dict().values()]),
        "loss": np.asarray(adata.uns["gbumap"]["training"]["loss"]),
    }


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_same_seed_same_process_is_bitwise_identical():
    first, second = _run(3), _run(3)
    for name in first:
        assert _same_bits(first[name], second[name]), name


def test_estimator_same_seed_is_bitwise_identical():
    X = np.asarray(_data().X)
    a = gbumap.GlassBoxUMAP(random_state=7, pca_components=8, **FIT).fit(X)
    b = gbumap.GlassBoxUMAP(random_state=7, pca_components=8, **FIT).fit(X)
    assert _same_bits(a.embedding_, b.embedding_)
    assert _same_bits(a.compute_contributions(X), b.compute_contributions(X))
    assert _same_bits(a.input_jacobian(X), b.input_jacobian(X))


def test_different_seeds_differ():
    first, second = _run(0), _run(1)
    assert not np.array_equal(first["embedding"], second["embedding"])
    assert not np.array_equal(first["weights"], second["weights"])
    assert not np.array_equal(first["contributions"], second["contributions"])


_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_determinism import _run
    np.savez({out!r}, **_run(5))
    """
)


def test_same_seed_two_fresh_processes_is_bitwise_identical(tmp_path):
    """Two fresh interpreters (own import order, thread pools, allocator state) give the same bits."""
    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    procs = []
    for i in range(2):
        script = _SCRIPT.format(tests=tests, out=str(tmp_path / f"run{i}.npz"))
        procs.append(subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    runs = [np.load(tmp_path / f"run{i}.npz") for i in range(2)]
    here = _run(5)
    for name in here:
        assert _same_bits(runs[0][name], runs[1][name]), name
        assert _same_bits(runs[0][name], here[name]), name  # and equal to this process's run


def test_refit_with_same_estimator_is_identical():
    X = np.asarray(_data().X)
    model = gbumap.GlassBoxUMAP(random_state=2, **FIT)
    first = model.fit_transform(X).copy()
    second = model.fit_transform(X)
    assert _same_bits(first, second)
