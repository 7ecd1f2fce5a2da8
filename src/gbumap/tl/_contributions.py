"""``gbumap.tl.contributions``: store the lossless compressed contributions."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._attribution import reduce_contributions
from .._progress import progress_bar
from .._registry import encode_record
from .._validation import check_batch_size
from .._view import model_view, reconstruction_error_of

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


def contributions(
    adata: AnnData,
    key: str = "gbumap",
    *,
    top_genes: int | None = None,
    batch_size: int = 4096,
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
        if isinstance(top_genes, bool) or int(top_genes) < 1:
            raise ValueError(f"top_genes must be a positive integer; got {top_genes!r}.")
    emb_key = f"X_{key}"
    if emb_key not in adata.obsm:
        raise KeyError(f"obsm[{emb_key!r}] not found; run gbumap.tl.fit(adata, key_added={key!r}) first.")
    # read the input one batch of cells at a time: memory beyond the output stays bounded
    n = adata.n_obs
    jac = np.empty((n, est.n_components, est.n_inputs_), dtype=est.numpy_dtype)
    with progress_bar(n, "gbumap jacobians", verbose) as bar:
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            jac[rows] = est.input_jacobian(view.matrix(adata, rows=rows), batch_size=batch_size)
            bar.update(rows.stop - rows.start)
    error = reconstruction_error_of(adata, view, jacobian=jac, batch_size=batch_size)
    layer = _top_k_layer(adata, view, top_genes, jac, batch_size) if top_genes is not None else None

    stored = {"jacobian_key": view.jacobian_key, "dtype": str(jac.dtype)}
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
