"""Exact contributions rebuilt on demand from the compressed form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import select_obs
from .._attribution import Reduction
from .._view import model_view, reconstruction_error_of

__all__ = ["contributions", "reconstruction_error"]


def contributions(
    adata: AnnData,
    genes: str | Sequence[str] | None = None,
    obs=None,
    *,
    reduction: Reduction = None,
    key: str = "gbumap",
    as_frame: bool = False,
    batch_size: int = 4096,
    part: Literal["total", "expression", "correction"] = "total",
) -> np.ndarray | pd.DataFrame:
    """Exact per-gene contributions for any cells and genes.

    They are rebuilt from the stored per-cell Jacobians
    (``obsm["<key>_jacobian"]``, written by :func:`gbumap.tl.contributions`),
    the model's loadings and baseline, and the expression, in batches; when no
    Jacobians are stored they are computed from the model.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    genes
        Gene names (default: every gene the model uses).
    obs
        Cells: ``None`` (all), a boolean mask, obs names or integer positions.
    reduction
        ``None`` keeps ``(cells, axes, genes)``; ``"l2"`` the magnitude over
        axes; ``"normed_l2"`` that magnitude divided by its per-cell sum over
        all the model's genes (also when ``genes`` selects a few); an
        integer, that signed axis.
    key
        The model key.
    as_frame
        Return a tidy DataFrame (one row per cell, gene and axis) instead.
    batch_size
        Cells per batch.
    part
        For a model fitted with ``batch_key``: ``"total"`` (the default; sums
        over genes to the integrated embedding), its ``"expression"`` part
        ``J_x·(x − b)`` (the measured expression's offset from the baseline)
        or its ``"correction"`` part ``−J_x·Lδ`` (what the batch correction
        moved). The two parts add up to the total exactly. Without a batch
        correction the correction part is 0.

    Returns
    -------
    Array of shape ``(n_cells, n_components, n_genes)`` or ``(n_cells, n_genes)``,
    or a DataFrame with columns ``cell``, ``gene``, (``axis``,) ``contribution``.

    Examples
    --------
    >>> import gbumap
    >>> c = gbumap.get.contributions(adata, genes=["LYZ", "CST3"], reduction="l2")  # doctest: +SKIP
    """
    if part not in ("total", "expression", "correction"):
        raise ValueError(f"part must be 'total', 'expression' or 'correction'; got {part!r}.")
    view = model_view(adata, key)
    feature_idx = view.feature_indices(genes)
    names = view.feature_names if feature_idx is None else view.feature_names[feature_idx]
    obs_idx = select_obs(adata, obs)
    n_comp = view.estimator.n_components
    shape = (len(obs_idx), n_comp, len(names)) if reduction is None else (len(obs_idx), len(names))
    out = np.empty(shape, dtype=view.estimator.numpy_dtype)
    pos = 0
    for rows, values in view.iter_reduced(adata, obs_idx, reduction, feature_idx, batch_size=batch_size, part=part):
        out[pos : pos + len(rows)] = values
        pos += len(rows)
    if not as_frame:
        return out
    cells = adata.obs_names.to_numpy()[obs_idx]
    if reduction is None:
        c_idx, a_idx, g_idx = np.indices(out.shape).reshape(3, -1)
        return pd.DataFrame(
            {"cell": cells[c_idx], "axis": a_idx, "gene": names[g_idx], "contribution": out.ravel()}
        )
    c_idx, g_idx = np.indices(out.shape).reshape(2, -1)
    return pd.DataFrame({"cell": cells[c_idx], "gene": names[g_idx], "contribution": out.ravel()})


def reconstruction_error(adata: AnnData, key: str = "gbumap", *, batch_size: int = 4096) -> dict[str, float]:
    """How exactly the summed contributions rebuild ``obsm["X_<key>"]``.

    Uses only what is stored in ``adata`` (Jacobians when present, else the
    model), so after a ``read_h5ad`` it checks the file's own content.

    Returns
    -------
    dict
        ``max_abs``: largest ``|Σ_g C - Z|``; ``max_rel``: divided by ``max |Z|``.

    Examples
    --------
    >>> gbumap.get.reconstruction_error(adata)["max_rel"] < 1e-4  # doctest: +SKIP
    True
    """
    return reconstruction_error_of(adata, model_view(adata, key), batch_size=batch_size)
