"""``gbumap.tl.contrast``: each gene's exact share of the vector between two groups on the map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._validation import check_batch_size
from .._view import model_view
from ._rank import _recarray, check_groupby

__all__ = ["contrast"]


def _group_names(adata: AnnData, groupby: str, group: str | Sequence[str], reference: str) -> list[str]:
    labels = adata.obs[groupby]
    present = [str(g) for g in pd.unique(labels.dropna())]
    groups = [group] if isinstance(group, str) else [str(g) for g in group]
    if not groups:
        raise ValueError("group is empty; name at least one group of obs[groupby].")
    unknown = [g for g in groups + ([] if reference == "rest" else [reference]) if g not in present]
    if unknown:
        raise KeyError(f"{unknown} not among the groups of obs[{groupby!r}]: {present}.")
    if reference in groups:
        raise ValueError(
            f"reference {reference!r} is also a group to contrast; a group's shift against itself is zero. "
            "Choose another reference or reference='rest'."
        )
    return groups


def contrast(
    adata: AnnData,
    groupby: str,
    group: str | Sequence[str],
    reference: str = "rest",
    *,
    key: str = "gbumap",
    key_added: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Why a group sits apart from another on the map, gene by gene, exactly.

    The shift between the mean positions of ``group`` and ``reference`` is the
    sum over genes of the difference of their mean contributions,
    ``Δ = Σ_g (C̄_g(group) − C̄_g(reference))``, with no approximation: each
    cell's contributions sum to its position. Each gene's term is split into
    its component along ``Δ`` (``scores``, in map units: positive terms push
    the group away from the reference, negative ones hold it towards it; the
    ``scores`` of all genes sum to ``|Δ|``) and its length across ``Δ``
    (``across``, movement that other genes cancel). ``share`` is
    ``scores / |Δ|``: the shares of all genes sum to 1.

    The result is written in the format of ``sc.tl.rank_genes_groups``, one
    field per contrasted group, genes ordered by ``scores``, so
    ``sc.pl.rank_genes_groups(adata, key=key_added)`` draws it; read it with
    :func:`gbumap.get.rank_features_df` (``key=`` the result's key). It holds
    no p-values (the terms are exact, not estimates), so
    ``sc.get.rank_genes_groups_df``, which expects them, does not read it.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key`` and its embedding
        ``obsm["X_<key>"]``.
    groupby
        Categorical ``obs`` column defining the groups.
    group
        The group, or several groups, each contrasted with ``reference``.
    reference
        ``"rest"`` (all other labelled cells) or the name of one group.
    key
        The model key.
    key_added
        ``uns`` key of the result (default ``"contrast_<key>"``).
    batch_size
        Cells per batch of contributions (memory stays bounded by it).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes
    ``uns[key_added]`` with ``params``, rank-ordered record arrays ``names``,
    ``scores``, ``share`` and ``across``, ``centroid_shift`` (``Δ`` per
    group, one row per map axis, from the embedding) and ``reconstruction_gap``
    (``max |Σ_g terms − Δ| / |Δ|`` per group: float rounding only).

    Examples
    --------
    >>> gbumap.tl.contrast(adata, "bulk_labels", "CD14+ Monocyte", reference="CD19+ B")  # doctest: +SKIP
    >>> gbumap.get.rank_features_df(adata, "CD14+ Monocyte", key="contrast_gbumap").head()  # doctest: +SKIP
    """
    view = model_view(adata, key)
    batch_size = check_batch_size(batch_size)
    check_groupby(adata, groupby)
    groups = _group_names(adata, groupby, group, reference)
    if view.embedding_key not in adata.obsm:
        raise KeyError(
            f"obsm[{view.embedding_key!r}] not found; run gbumap.tl.fit(adata, key_added={key!r}) first."
        )
    labels = adata.obs[groupby].astype(object).to_numpy()
    labelled = np.flatnonzero(pd.notna(labels))
    cell_labels = labels[labelled].astype(str)  # group names are compared as strings, as they are stored
    named = groups + ([] if reference == "rest" else [reference])
    masks = {name: cell_labels == name for name in named}
    too_small = {g: int(m.sum()) for g, m in masks.items() if m.sum() < 2}
    if reference == "rest":
        too_small.update({f"rest of {g}": int((~m).sum()) for g, m in masks.items() if (~m).sum() < 2})
    if too_small:
        raise ValueError(f"Groups with fewer than 2 cells cannot be contrasted: {too_small}.")

    n_axes, n_genes = view.estimator.n_components, len(view.feature_names)
    sums = {name: np.zeros((n_axes, n_genes)) for name in named}
    total = np.zeros((n_axes, n_genes))
    position = {name: np.zeros(n_axes) for name in named}
    position_total = np.zeros(n_axes)
    emb = np.asarray(adata.obsm[view.embedding_key], dtype=np.float64)
    start = 0
    for rows, contrib in view.iter_contributions(adata, labelled, batch_size=batch_size):
        part = slice(start, start + len(rows))
        start += len(rows)
        total += contrib.sum(axis=0, dtype=np.float64)
        position_total += emb[rows].sum(axis=0)
        for name in named:
            inside = masks[name][part]
            sums[name] += contrib[inside].sum(axis=0, dtype=np.float64)
            position[name] += emb[rows[inside]].sum(axis=0)

    columns: dict[str, dict[str, np.ndarray]] = {f: {} for f in ("names", "scores", "share", "across")}
    shift, gap = {}, {}
    for g in groups:
        n_g = masks[g].sum()
        if reference == "rest":
            n_r = len(labelled) - n_g
            mean_ref, pos_ref = (total - sums[g]) / n_r, (position_total - position[g]) / n_r
        else:
            n_r = masks[reference].sum()
            mean_ref, pos_ref = sums[reference] / n_r, position[reference] / n_r
        terms = sums[g] / n_g - mean_ref  # (axes, genes)
        delta = position[g] / n_g - pos_ref
        length = float(np.linalg.norm(delta))
        if length == 0.0:
            raise ValueError(f"{g!r} and {reference!r} have the same mean position; there is no shift to explain.")
        direction = delta / length
        along = direction @ terms
        across = np.linalg.norm(terms - np.outer(direction, along), axis=0)
        order = np.argsort(-along, kind="stable")
        columns["names"][g] = view.feature_names[order].astype(str)
        columns["scores"][g] = along[order]
        columns["share"][g] = along[order] / length
        columns["across"][g] = across[order]
        shift[g] = delta
        gap[g] = np.array([np.abs(terms.sum(axis=1) - delta).max() / length])

    result = {
        "params": {"groupby": groupby, "reference": reference, "method": "gbumap_contrast", "model_key": key},
        "names": _recarray(columns["names"], "O"),
        **{f: _recarray(columns[f], np.float64) for f in ("scores", "share", "across")},
        "centroid_shift": _recarray(shift, np.float64),
        "reconstruction_gap": _recarray(gap, np.float64),
    }
    target = adata.copy() if copy else adata
    target.uns[key_added or f"contrast_{key}"] = result
    return target if copy else None
