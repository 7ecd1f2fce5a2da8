"""Writing a large simulation to disk piece by piece (``.h5ad`` or zarr), for atlas-scale tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ._simulate import _SEED_BLOCK, simulate

__all__ = ["write_simulated"]


def _open_root(path: Path):
    if path.suffix == ".zarr":
        import anndata as ad
        import zarr

        return zarr.open_group(str(path), mode="w", zarr_format=ad.settings.zarr_write_format), None
    import h5py

    handle = h5py.File(path, "w")
    return handle, handle


def write_simulated(
    path: str | os.PathLike,
    n_cells: int,
    n_genes: int = 2_000,
    *,
    chunk_size: int = 100_352,
    counts: bool = False,
    n_jobs: int = 1,
    random_state: int = 0,
    verbose: bool = False,
    **params: Any,
) -> Path:
    """Simulate ``n_cells`` cells and write them to ``path`` one piece at a time.

    The file holds exactly what ``simulate(n_cells, n_genes, random_state=...,
    **params)`` returns (``X`` as CSR; ``obs``, ``var``, ``uns``; the
    ``counts`` layer only with ``counts=True``), but memory holds one piece of
    ``chunk_size`` cells at a time plus the cell annotations, so data far
    larger than memory can be written. Read it back whole with
    ``anndata.read_h5ad``/``read_zarr``, or lazily (see :doc:`/scale`).

    Parameters
    ----------
    path
        ``.h5ad`` file or ``.zarr`` directory (replaced if it exists).
    n_cells, n_genes, random_state, **params
        As for :func:`gbumap.datasets.simulate`; ``params`` are passed to every
        piece unchanged (batch options such as ``n_batches`` included: each
        piece draws the same batch design, and its cells' batches from the
        streams of their own blocks, so the file still equals one call's output).
        Not ``n_proteins``: the proteins' CLR needs every cell at once.
    chunk_size
        Cells simulated and appended per piece (rounded up to a multiple of 1,024).
    counts
        Also write ``layers["counts"]`` (doubles the file size).
    n_jobs
        Threads generating each piece.
    verbose
        Print progress, one line per piece.

    Returns
    -------
    The path written.

    Examples
    --------
    >>> import anndata as ad
    >>> from gbumap.datasets import simulate, write_simulated
    >>> path = write_simulated("sim.h5ad", 3_000, 1_000, chunk_size=1_024)  # three pieces
    >>> adata = ad.read_h5ad(path)
    >>> (adata.X != simulate(3_000, 1_000).X).nnz  # the same cells as one simulate call
    0
    """
    from anndata.io import sparse_dataset, write_elem

    if params.get("n_proteins", 0):
        raise ValueError(
            "write_simulated does not write proteins: their CLR normalisation needs means over every cell, which "
            "pieces do not have. Simulate in memory with simulate(..., n_proteins=...) and write_h5ad, or drop "
            "n_proteins."
        )
    path = Path(path)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    step = -(-int(chunk_size) // _SEED_BLOCK) * _SEED_BLOCK
    root, handle = _open_root(path)
    obs_parts: list[pd.DataFrame] = []
    first = None
    try:
        for start in range(0, int(n_cells), step):
            piece = simulate(
                min(step, n_cells - start), n_genes, first_cell=start, n_jobs=n_jobs, random_state=random_state,
                **params,
            )
            obs_parts.append(piece.obs)
            if first is None:
                first = piece
                write_elem(root, "X", piece.X)
                if counts:
                    write_elem(root, "layers", {"counts": piece.layers["counts"]})
            else:
                sparse_dataset(root["X"]).append(piece.X)
                if counts:
                    sparse_dataset(root["layers/counts"]).append(piece.layers["counts"])
            if verbose:
                print(f"write_simulated: {start + piece.n_obs:,} of {n_cells:,} cells", flush=True)
        obs = pd.concat(obs_parts)
        for column, dtype in first.obs.dtypes.items():
            if isinstance(dtype, pd.CategoricalDtype):
                obs[column] = pd.Categorical(obs[column], categories=dtype.categories)
        uns = first.uns
        uns["simulation"]["params"].update({"n_cells": int(n_cells), "first_cell": 0})
        write_elem(root, "obs", obs)
        write_elem(root, "var", first.var)
        write_elem(root, "uns", uns)
        for name in ("obsm", "varm", "obsp", "varp") + (() if counts else ("layers",)):
            write_elem(root, name, {})
        root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    except BaseException:
        if handle is not None:
            handle.close()
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    if handle is not None:
        handle.close()
    else:
        import zarr

        zarr.consolidate_metadata(str(path))
    return path
