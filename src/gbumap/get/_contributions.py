"""Exact contributions rebuilt on demand from the compressed form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import select_obs
from .._attribution import Reduction, reduce_contributions
from ._model import model_view

__all__ = ["contributions", "reconstruction_error"]


def _feature_indices(names: np.ndarray, genes) -> np.ndarray | None:
    if genes is None:
        return None
    wanted = np.asarray([genes] if isinstance(genes, str) else list(genes)).astype(str)
    index = pd.Index(names)
    idx = index.get_indexer(wanted)
    if (idx < 0).any():
        missing = wanted[idx < 0]
        raise KeyError(
            f"Not among the model's {len(names)} features: {', '.join(missing[:20])}"
            f"{' …' if len(missing) > 20 else ''}. Only genes the model was trained on have contributions."
        )
    return idx


def contributions(
    adata: AnnData,
    genes: str | Sequence[str] | None = None,
    obs=None,
    *,
    reduction: Reduction = None,
    key: str = "gbumap",
    as_frame: bool = False,
    batch_size: int = 4096,
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

    Returns
    -------
    Array of shape ``(n_cells, n_components, n_genes)`` or ``(n_cells, n_genes)``,
    or a DataFrame with columns ``cell``, ``gene``, (``axis``,) ``contribution``.

    Examples
    --------
    >>> import gbumap
    >>> c = gbumap.get.contributions(adata, genes=["LYZ", "CST3"], reduction="l2")  # doctest: +SKIP
    """
    view = model_view(adata, key)
    feature_idx = _feature_indices(view.feature_names, genes)
    names = view.feature_names if feature_idx is None else view.feature_names[feature_idx]
    obs_idx = select_obs(adata, obs)
    n_comp = view.estimator.n_components
    shape = (len(obs_idx), n_comp, len(names)) if reduction is None else (len(obs_idx), len(names))
    out = np.empty(shape, dtype=view.estimator.numpy_dtype)
    pos = 0
    # normed_l2 is a share of the cell's total over all genes, so it needs every gene
    subset_after = reduction == "normed_l2" and feature_idx is not None
    source_idx = None if subset_after else feature_idx
    for rows, contrib in view.iter_contributions(adata, obs_idx, source_idx, batch_size=batch_size):
        reduced = reduce_contributions(contrib, reduction)
        out[pos : pos + len(rows)] = reduced[:, feature_idx] if subset_after else reduced
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
    return measure_reconstruction(adata, model_view(adata, key), batch_size=batch_size)


def measure_reconstruction(adata: AnnData, view, *, jacobian=None, batch_size: int = 4096) -> dict[str, float]:
    emb_key = f"X_{view.key}"
    if emb_key not in adata.obsm:
        raise KeyError(f"obsm[{emb_key!r}] not found; run gbumap.tl.fit(adata, key_added={view.key!r}).")
    emb = np.asarray(adata.obsm[emb_key], dtype=np.float64)
    worst = 0.0
    rows_all = np.arange(adata.n_obs)
    for rows, contrib in view.iter_contributions(adata, rows_all, batch_size=batch_size, jacobian=jacobian):
        total = contrib.sum(axis=-1, dtype=np.float64)
        worst = max(worst, float(np.abs(total - emb[rows]).max()))
    scale = float(np.abs(emb).max()) or 1.0
    return {"max_abs": worst, "max_rel": worst / scale}
