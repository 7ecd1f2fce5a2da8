"""Write ``tests/data/simulation_reference.npz``: what ``datasets.simulate`` produced before it was split.

``tests/test_simulator.py`` used to compare a SHA-256 of every array of three
simulations with checksums recorded from the simulator as it was at commit
``e99dd7b`` (one 477-line function). A checksum holds only where every float
operation rounds as it did on the recording machine, and it does not: on an
Intel CPU with AVX-512 (OpenBLAS's SkylakeX kernels) the one dot product of
the simulator, the expected library size, rounds its last bit differently
from the AVX2 kernels of the recording machine, so every mean moves by an ulp
and the checksums differ although nothing changed.

This script keeps the same evidence in a form that survives the machine. It
first checks that this machine reproduces the recorded checksums (run it with
``OPENBLAS_CORETYPE=Haswell`` on x86-64, the kernels the checksums were
recorded with), then stores, for each of the three simulations:

* the integer counts and the sparsity of ``X`` as checksums (integers are
  drawn from the means by comparisons that an ulp of the mean does not move);
* every ``obs``, ``var`` and ``uns["simulation"]`` array in full (a few
  thousand values), compared to float rounding by the test;
* ``X``'s per-cell and per-gene sums (float64), compared to float32 rounding.

    OPENBLAS_CORETYPE=Haswell python tests/data/make_simulation_reference.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
OUT = HERE / "simulation_reference.npz"

#: The three simulations and the SHA-256 checksums recorded at e99dd7b (numpy 2.4, x86-64, AVX2 BLAS kernels).
CASES = {
    "plain": (
        dict(n_cells=3_000, n_genes=1_000, random_state=7),
        "17adabc756a8858a1d47e2d33e80c50ccdf176fc9ab09b68e8ee89f45bd3c3c8",
    ),
    "trajectory": (
        dict(n_cells=2_500, n_genes=1_200, trajectory_fraction=0.3, n_progenitor_genes=15, chunk_size=1_024,
             n_jobs=2, random_state=3),
        "a827e8f721f4b998ec4fa4ff2baa47d2a19124fa85b68d674fd0125e762c80a7",
    ),
    "batches": (
        dict(n_cells=2_100, n_genes=1_000, n_batches=3, batch_gene_fraction=0.2, trajectory_fraction=0.2,
             first_cell=1_024, random_state=11),
        "4f07267f7b9c4192fdc174ad288fa9110c423c58c27545486371bd7cec495f24",
    ),
}
RECORDED_NUMPY = "2.4"


def _walk(adata):
    """``(label, value)`` for every array of a simulated AnnData, in the order the checksums hashed them."""

    def walk(label, value):
        if isinstance(value, dict):
            for k in sorted(value):
                yield from walk(f"{label}/{k}", value[k])
        elif sp.issparse(value):
            yield label, value
        elif isinstance(value, pd.DataFrame):
            for column in value.columns:
                yield from walk(f"{label}/{column}", value[column])
            yield f"{label}/index", np.asarray(value.index, dtype=str)
        elif isinstance(value, pd.Series) and isinstance(value.dtype, pd.CategoricalDtype):
            yield label, value  # codes and categories
        else:
            arr = np.asarray(value)
            yield label, (arr.astype(str) if arr.dtype == object else arr)

    yield from walk("X", adata.X)
    yield from walk("counts", adata.layers["counts"])
    yield from walk("obs", adata.obs)
    yield from walk("var", adata.var)
    yield from walk("uns", adata.uns["simulation"])


def checksum(adata) -> str:
    """The SHA-256 the old test recorded (its ``_simulation_digest``, unchanged)."""
    h = hashlib.sha256()

    def add(label: str, value) -> None:
        h.update(label.encode())
        if isinstance(value, dict):
            for k in sorted(value):
                add(f"{label}/{k}", value[k])
        elif sp.issparse(value):
            for part in (value.data, value.indices, value.indptr):
                add(label, part)
        elif isinstance(value, pd.DataFrame):
            for column in value.columns:
                add(f"{label}/{column}", value[column])
            add(f"{label}/index", np.asarray(value.index, dtype=str))
        elif isinstance(value, pd.Series) and isinstance(value.dtype, pd.CategoricalDtype):
            add(label, np.asarray(value.cat.codes))
            add(label, np.asarray(value.cat.categories, dtype=str))
        else:
            arr = np.asarray(value)
            arr = arr.astype(str) if arr.dtype == object else arr
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())

    add("X", adata.X)
    add("counts", adata.layers["counts"])
    add("obs", adata.obs)
    add("var", adata.var)
    add("uns", adata.uns["simulation"])
    return h.hexdigest()


def _sha(*parts: np.ndarray) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(f"{part.dtype.str}{part.shape}".encode())
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def summary(adata) -> dict[str, np.ndarray]:
    """What the test compares: exact checksums of integers and sparsity, float arrays and ``X``'s sums in full."""
    out: dict[str, np.ndarray] = {}
    for label, value in _walk(adata):
        if sp.issparse(value):
            csr = sp.csr_matrix(value)
            if label == "counts":
                out["counts/sha256"] = np.array(_sha(csr.data, csr.indices, csr.indptr))
            else:
                out[f"{label}/structure_sha256"] = np.array(_sha(csr.indices, csr.indptr))
                out[f"{label}/dtype"] = np.array(csr.dtype.str)
                out[f"{label}/cell_sums"] = np.asarray(csr.sum(axis=1, dtype=np.float64)).ravel()
                out[f"{label}/gene_sums"] = np.asarray(csr.sum(axis=0, dtype=np.float64)).ravel()
        elif isinstance(value, pd.Series):
            out[f"{label}/codes"] = np.asarray(value.cat.codes)
            out[f"{label}/categories"] = np.asarray(value.cat.categories, dtype=str)
        else:
            out[label] = value
    return out


def main() -> None:
    from gbumap.datasets import simulate

    if ".".join(np.__version__.split(".")[:2]) != RECORDED_NUMPY:
        raise SystemExit(f"the checksums were recorded with numpy {RECORDED_NUMPY}; this is numpy {np.__version__}")
    arrays: dict[str, np.ndarray] = {}
    for name, (kwargs, recorded) in CASES.items():
        adata = simulate(**kwargs)
        got = checksum(adata)
        if got != recorded:
            raise SystemExit(
                f"{name}: this machine does not reproduce the recorded checksum ({got}); "
                "run with OPENBLAS_CORETYPE=Haswell on x86-64"
            )
        for key, value in summary(adata).items():
            arrays[f"{name}|{key}"] = value
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
