"""How much of each cell's position each modality gives, read back as data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import select_obs
from .._validation import check_batch_size
from .._view import ModelView, model_view

__all__ = ["modality_contributions", "modality_parts"]


def modality_parts(view: ModelView, adata: AnnData, obs_idx: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``(cells, axes, modalities)`` float64: each modality's features' contributions, summed (exact)."""
    info = view.record.modalities
    if info is None:
        raise ValueError(
            f"The model under uns[{view.key!r}] reads one modality; fit it with "
            "gbumap.tl.fit(adata, modality_key='feature_types') (or on a MuData) to split the map by modality."
        )
    onehot = np.zeros((len(view.feature_names), len(info.names)))
    onehot[np.arange(len(view.feature_names)), info.feature_codes] = 1.0
    out = np.empty((len(obs_idx), view.estimator.n_components, len(info.names)))
    pos = 0
    for rows, contrib in view.iter_contributions(adata, obs_idx, batch_size=check_batch_size(batch_size)):
        out[pos : pos + len(rows)] = contrib.astype(np.float64) @ onehot
        pos += len(rows)
    return out


def modality_contributions(
    adata: AnnData, key: str = "gbumap", *, obs=None, batch_size: int = 4096
) -> pd.DataFrame:
    """Each cell's position split exactly by modality (genes, proteins, …), with each modality's share.

    The part of a modality is the sum of the contributions of its features;
    the parts of all modalities add up to the cell's coordinates in
    ``obsm["X_<key>"]`` to float precision, for every cell.

    Parameters
    ----------
    adata
        AnnData (or the joint view of a MuData) with a multimodal model under
        ``key`` (fitted with ``modality_key=``, or on a MuData).
    key
        The model key.
    obs
        Cells: ``None`` (all), a boolean mask, obs names or integer positions.
    batch_size
        Cells per batch when rebuilding contributions.

    Returns
    -------
    DataFrame indexed like the selected ``obs_names`` with, for each modality
    ``m`` and map axis ``i`` (from 1, as ``map_shift_<i>`` of
    :func:`gbumap.get.batch_correction`), ``<m>_<i>`` (its part of coordinate
    ``i``, map units), and for each modality ``share_<m>``: the length of its
    part divided by the sum of the lengths of all parts (0–1; the shares of a
    cell add up to 1).

    Examples
    --------
    >>> import gbumap
    >>> from gbumap.datasets import simulate
    >>> adata = simulate(1_000, 1_000, n_proteins=24, random_state=0)
    >>> gbumap.tl.fit(adata, modality_key="feature_types", n_steps=50, verbose=False)
    >>> parts = gbumap.get.modality_contributions(adata)
    >>> list(parts.columns)
    ['GEX_1', 'GEX_2', 'ADT_1', 'ADT_2', 'share_GEX', 'share_ADT']
    """
    view = model_view(adata, key)
    obs_idx = select_obs(adata, obs)
    parts = modality_parts(view, adata, obs_idx, batch_size)
    names = view.record.modalities.names
    frame = {}
    for m, name in enumerate(names):
        for i in range(parts.shape[1]):
            frame[f"{name}_{i + 1}"] = parts[:, i, m]
    lengths = np.linalg.norm(parts, axis=1)
    total = lengths.sum(axis=1, keepdims=True)
    shares = np.divide(lengths, total, out=np.full_like(lengths, 1.0 / len(names)), where=total > 0)
    for m, name in enumerate(names):
        frame[f"share_{name}"] = shares[:, m]
    return pd.DataFrame(frame, index=adata.obs_names[obs_idx].copy())
