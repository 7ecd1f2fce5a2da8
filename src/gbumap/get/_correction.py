"""What a model's batch correction did to each cell, read back as data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import KEY_BATCH, doc_params
from .._view import model_view

__all__ = ["batch_correction"]


@doc_params(key_batch=KEY_BATCH)
def batch_correction(adata: AnnData, key: str = "gbumap", *, batch_size: int = 4096) -> pd.DataFrame:
    """Per cell, how far the batch correction moved it, in the input and on the map.

    A model fitted with ``batch_key`` subtracts a per-cell shift ``δ`` from the
    encoder input (``z̃ = z − δ``). Its effect on the map is exact: the
    correction parts of the cell's gene contributions sum to
    ``−J(z̃)·δ`` (divided by the encoder's degree), a vector in map units.

    Parameters
    ----------
    adata
        AnnData with a batch-corrected model under ``key`` (its Jacobians are
        read from ``obsm["<key>_jacobian"]`` when stored, else computed).
    {key_batch}

    Returns
    -------
    DataFrame indexed like ``obs_names`` with ``batch``, ``map_shift_<i>`` (one
    column per map axis: the correction part of the position, summed over
    genes), ``map_shift`` (its length), ``input_shift`` (``|δ|``) and
    ``input_shift_rel`` (``|δ| / |z|``, the share of the cell's input the
    correction moved).

    Examples
    --------
    >>> gbumap.tl.fit(adata, batch_key="sample")  # doctest: +SKIP
    >>> gbumap.get.batch_correction(adata).groupby("batch")["map_shift"].median()  # doctest: +SKIP
    """
    view = model_view(adata, key)
    est = view.estimator
    labels = view.batch_labels(adata)
    if labels is None:
        raise ValueError(
            f"The model under uns[{key!r}] was fitted without batch correction; fit it with "
            "gbumap.tl.fit(adata, batch_key=...) to integrate batches."
        )
    n, d = adata.n_obs, est.n_components
    map_shift = np.empty((n, d))
    input_shift = np.empty(n)
    relative = np.empty(n)
    for rows, block, jac, _ in view.jacobian_batches(adata, np.arange(n), batch_size, None):
        z, delta = view.projection_and_shift(block, labels[rows])
        map_shift[rows] = -np.einsum("ndk,nk->nd", jac.astype(np.float64), delta) / est.homogeneity_degree_
        input_shift[rows] = np.linalg.norm(delta, axis=1)
        norms = np.linalg.norm(z, axis=1)
        relative[rows] = input_shift[rows] / np.where(norms > 0, norms, 1.0)
    frame = pd.DataFrame(map_shift, index=adata.obs_names, columns=[f"map_shift_{i + 1}" for i in range(d)])
    frame.insert(0, "batch", pd.Categorical(labels, categories=[str(c) for c in est.correction_.categories]))
    frame["map_shift"] = np.linalg.norm(map_shift, axis=1)
    frame["input_shift"] = input_shift
    frame["input_shift_rel"] = relative
    return frame
