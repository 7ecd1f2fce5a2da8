"""``gbumap.tl.contributions``: store the lossless compressed contributions."""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._dask import is_dask_array, store_rows, threads_for_in_memory
from .._progress import progress_bar
from .._registry import encode_record
from .._validation import check_batch_size, check_int
from .._view import ModelView, chunk_reconstruction_gaps, model_view, reconstruction_error_of

__all__ = ["contributions"]


def _top_k_layer(adata: AnnData, view, top_genes: int, jacobian: np.ndarray, batch_size: int) -> sp.csr_matrix:
    """Each cell's ``top_genes`` largest L2 contributions as a sparse (n_obs, n_vars) matrix."""
    var_idx = adata.var_names.get_indexer(view.feature_names)
    k = min(int(top_genes), len(var_idx))
    indptr = np.arange(adata.n_obs + 1, dtype=np.int64) * k
    indices = np.empty(adata.n_obs * k, dtype=np.int64)
    data = np.empty(adata.n_obs * k, dtype=np.float32)
    for rows, mag in view.iter_reduced(adata, np.arange(adata.n_obs), "l2", batch_size=batch_size, jacobian=jacobian):
        top = np.argpartition(-mag, kth=k - 1, axis=1)[:, :k]
        top.sort(axis=1)
        span = slice(rows[0] * k, (rows[-1] + 1) * k)
        indices[span] = var_idx[top].ravel()
        data[span] = np.take_along_axis(mag, top, axis=1).ravel()
    layer = sp.csr_matrix((data, indices, indptr), shape=(adata.n_obs, adata.n_vars))
    layer.sort_indices()
    return layer


def _jacobians_in_memory(adata: AnnData, view: ModelView, batch_size: int, verbose: bool) -> np.ndarray:
    """Every cell's Jacobian, reading the input one batch of cells at a time (memory beyond the output bounded)."""
    est = view.estimator
    n = adata.n_obs
    labels = view.batch_labels(adata)
    jac = np.empty((n, est.n_components, est.n_inputs_), dtype=est.numpy_dtype)
    with progress_bar(n, "gbumap jacobians", verbose) as bar:
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            jac[rows] = est.input_jacobian(
                view.matrix(adata, rows=rows), batch_size=batch_size, batches=None if labels is None else labels[rows]
            )
            bar.update(rows.stop - rows.start)
    return jac


def _chunked_jacobians(adata: AnnData, view: ModelView, matrix, store, batch_size: int, verbose: bool):
    """Jacobians and the reconstruction error in one pass over the row chunks (into memory, or into ``store``)."""
    import dask.array as da

    from .._chunked_store import write_obsm_rows

    est = view.estimator
    local = threads_for_in_memory(matrix)  # in-memory input stays on this process's threads, even under a cluster
    if not is_dask_array(matrix):
        matrix = da.from_array(matrix, chunks=(max(batch_size, 8192), -1), asarray=False, name=False)
    labels = view.batch_labels(adata)
    lazy = est.input_jacobian(matrix, batch_size=batch_size, batches=labels)
    embedding = np.asarray(adata.obsm[view.embedding_key], dtype=np.float64)
    worst = chunk_reconstruction_gaps(matrix, lazy, embedding, view, labels).max()
    with local:
        if store is not None:
            jac, (max_abs,) = write_obsm_rows(lazy, store, view.jacobian_key, adata, also=(worst,), verbose=verbose)
        else:
            jac = np.empty(lazy.shape, dtype=lazy.dtype)
            (max_abs,) = store_rows(lazy, jac, also=(worst,), verbose=verbose, desc="gbumap jacobians")
    scale = float(np.abs(embedding).max()) or 1.0
    return jac, {"max_abs": float(max_abs), "max_rel": float(max_abs) / scale}


def contributions(
    adata: AnnData,
    key: str = "gbumap",
    *,
    top_genes: int | None = None,
    batch_size: int = 4096,
    store: str | os.PathLike | None = None,
    copy: bool = False,
    verbose: bool = True,
) -> AnnData | None:
    """Compute and store every cell's contributions in compressed, lossless form.

    The per-cell Jacobian of the encoder in its input space goes to
    ``obsm["<key>_jacobian"]`` — with 50 PCs and a 2-D embedding that is 100
    numbers per cell, instead of ``2 × n_genes`` — and exact gene-level
    contributions are rebuilt from it on demand by
    :func:`gbumap.get.contributions`.

    Parameters
    ----------
    adata
        AnnData with a model fitted by :func:`gbumap.tl.fit`.
    key
        The model key.
    top_genes
        Also write ``layers["<key>_l2"]``: for each cell, the L2 magnitude of
        its ``top_genes`` largest gene contributions (others zero), a sparse
        layer that scanpy's own plots can colour by
        (``sc.pl.embedding(adata, basis=key, color=gene, layer=f"{key}_l2")``).
    batch_size
        Cells per batch.
    store
        Also write the Jacobians, chunk by chunk, to ``obsm/<key>_jacobian``
        of this zarr directory (``.zarr``) or HDF5 file (``.h5ad``; it may be
        the file ``adata`` is backed by, opened with ``backed="r+"``), and keep
        in ``obsm`` a lazy Dask array reading them back, so the Jacobians are
        never held in memory whole. An error or interrupt leaves the store as
        it was (the array is written under a temporary name first).
    copy
        Return a new AnnData instead of writing into ``adata``.
    verbose
        Show a progress bar on large data.

    Returns
    -------
    ``None`` or the new AnnData, with ``obsm["<key>_jacobian"]`` of shape
    ``(n_obs, n_components, n_inputs)``, the measured reconstruction error in
    ``uns[key]["reconstruction_error"]``, the seconds taken in
    ``uns[key]["timings"]["contributions"]`` and, with ``top_genes``, the layer.

    Dask input (a Dask ``X`` or layer, or a backed ``X``) is read in one pass
    over its row chunks that computes the Jacobians and the reconstruction
    error together; without ``store`` the Jacobians are gathered in memory
    (100 numbers per cell), with it they go to the store.

    Examples
    --------
    >>> gbumap.tl.contributions(adata, top_genes=20)  # doctest: +SKIP
    """
    started = time.perf_counter()
    batch_size = check_batch_size(batch_size)
    view = model_view(adata, key)
    est = view.estimator
    est.verbose = verbose
    if top_genes is not None:
        if not view.gene_level:
            raise ValueError(
                f"Model {key!r} explains columns of {view.spec.description}, not genes; a gene layer cannot be built."
            )
        top_genes = check_int(top_genes, "top_genes")
    emb_key = f"X_{key}"
    if emb_key not in adata.obsm:
        raise KeyError(f"obsm[{emb_key!r}] not found; run gbumap.tl.fit(adata, key_added={key!r}) first.")
    matrix = view.matrix(adata, lazy=True)
    if is_dask_array(matrix) or store is not None:
        jac, error = _chunked_jacobians(adata, view, matrix, store, batch_size, verbose)
    else:
        jac = _jacobians_in_memory(adata, view, batch_size, verbose)
        error = reconstruction_error_of(adata, view, jacobian=jac, batch_size=batch_size)
    layer = _top_k_layer(adata, view, top_genes, jac, batch_size) if top_genes is not None else None

    stored = {"jacobian_key": view.jacobian_key, "dtype": str(np.dtype(jac.dtype))}
    if layer is not None:
        stored.update({"layer": f"{key}_l2", "top_genes": int(top_genes)})
    record = view.record.replace(
        reconstruction_error=error,
        timings={**view.record.timings, "contributions": time.perf_counter() - started},
        contributions=stored,
    )
    target = adata.copy() if copy else adata
    target.obsm[view.jacobian_key] = jac
    if layer is not None:
        target.layers[stored["layer"]] = layer
    target.uns[key] = encode_record(record)
    return target if copy else None
