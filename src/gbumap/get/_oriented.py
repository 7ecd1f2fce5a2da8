"""Contributions in frames that do not depend on how the map happens to be rotated or mirrored.

A UMAP's axes mean nothing: rotate or mirror the map and it is the same map,
but every signed per-axis contribution changes. Here each gene's
contribution is measured against a direction that turns with the map:

- ``radial``: along the cell's offset from its group's mean position (how
  much the gene pushes the cell out from its group's centre, or pulls it in);
- ``tangential``: the length of the rest of the gene's term, across that
  offset;
- ``contrast``: along the shift between two groups found by
  :func:`gbumap.tl.contrast`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import missing_key_error, select_obs
from .._results import find_result, select_group
from .._validation import check_batch_size, obs_groups
from .._view import ModelView, model_view

__all__ = ["cell_contrast", "oriented_contributions", "FRAMES"]

Frame = Literal["radial", "tangential", "contrast"]
FRAMES = ("radial", "tangential", "contrast")


def _embedding(adata: AnnData, view: ModelView) -> np.ndarray:
    if view.embedding_key not in adata.obsm:
        raise missing_key_error("obsm", view.embedding_key, adata.obsm.keys())
    return np.asarray(adata.obsm[view.embedding_key], dtype=np.float64)


def _labels(adata: AnnData, groupby: str) -> np.ndarray:
    return obs_groups(adata, groupby, min_groups=2).labels


def _group_centres(
    adata: AnnData, view: ModelView, labels: np.ndarray, names: Sequence[str], batch_size: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{group: (mean contributions (axes, genes), mean position (axes,))}`` for the groups named."""
    emb = _embedding(adata, view)
    jacobian = view.stored_jacobian(adata)
    centres = {}
    for name in names:
        rows = np.flatnonzero(labels == name)
        total = view.group_sums(adata, rows, batch_size, jacobian).contributions
        centres[name] = (total / len(rows), emb[rows].mean(axis=0))
    return centres


def _contrast_frame(adata: AnnData, view: ModelView, contrast_key: str, group: str | None, batch_size: int):
    """The unit shift of a stored contrast and its reference's mean contributions and position."""
    result = find_result(adata, contrast_key, "contrast")
    group = select_group(result, contrast_key, group, "contrasts", "contrasted")
    params = result["params"]
    if str(params.get("model_key", view.key)) != view.key:
        raise ValueError(
            f"uns[{contrast_key!r}] was computed from model {params['model_key']!r}, not {view.key!r}; "
            "pass key= that model."
        )
    labels = _labels(adata, str(params["groupby"]))
    reference = str(params["reference"])
    if reference == "rest":
        rows = np.flatnonzero((labels != None) & (labels != group))  # noqa: E711 - elementwise on objects
    else:
        rows = np.flatnonzero(labels == reference)
    emb = _embedding(adata, view)
    mean_ref = view.group_sums(adata, rows, batch_size).contributions / len(rows)
    shift = np.asarray(result["centroid_shift"][group], dtype=np.float64)
    return shift / np.linalg.norm(shift), mean_ref, emb[rows].mean(axis=0)


def oriented_contributions(
    adata: AnnData,
    genes: str | Sequence[str] | None = None,
    *,
    frame: Frame = "radial",
    groupby: str | None = None,
    group: str | None = None,
    contrast_key: str | None = None,
    obs: np.ndarray | Sequence[str] | Sequence[int] | None = None,
    key: str = "gbumap",
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Per-cell gene contributions measured along directions that turn with the map.

    Rotating or mirroring a UMAP leaves it the same map but changes every
    signed per-axis contribution; these values do not change.

    - ``"radial"``: each gene's share of the cell's offset from its group's
      mean position, ``û·(C_g − C̄_g)`` with ``û`` the unit offset and
      ``C̄_g`` the group's mean contribution of gene ``g``. Exact identity:
      a cell's radial values sum over all genes to its distance from its
      group's mean position. Positive genes push the cell out from the
      centre, negative ones pull it in.
    - ``"tangential"``: the length of the rest of the gene's term,
      ``|(C_g − C̄_g) − û (û·(C_g − C̄_g))|`` (never negative: a sign across
      the offset would flip with a mirrored map).
    - ``"contrast"``: ``Δ̂·(C_g − C̄_g)`` with ``Δ̂`` the unit shift of a
      :func:`gbumap.tl.contrast` result and ``C̄_g`` its reference's mean
      contribution. Exact identities: over all genes a cell's values sum to
      ``Δ̂·(z − z̄_ref)``, and their mean over the contrasted group's cells
      is the contrast's ``scores``.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key`` and its embedding.
    genes
        Genes to report (default: all the model's features).
    frame
        ``"radial"``, ``"tangential"`` or ``"contrast"``.
    groupby
        ``obs`` column whose groups define the centres (``"radial"`` and
        ``"tangential"``). Unlabelled cells get ``NaN``.
    group
        The contrasted group to project on (``"contrast"``; needed only when
        the result contrasts several groups).
    contrast_key
        The :func:`gbumap.tl.contrast` result (default ``"contrast_<key>"``).
    obs
        Cells to report: ``None`` (all), a boolean mask, obs names or integer
        positions. Group centres always use all the group's cells.
    key
        The model key.
    batch_size
        Cells per batch of contributions.

    Returns
    -------
    ``pandas.DataFrame`` of cells × genes (float64). A cell at exactly its
    group's mean position has no offset direction: its radial and tangential
    values are ``NaN``.

    Examples
    --------
    >>> radial = gbumap.get.oriented_contributions(adata, ["LYZ", "CD74"], groupby="bulk_labels")  # doctest: +SKIP
    >>> gbumap.tl.contrast(adata, "bulk_labels", "CD14+ Monocyte", reference="CD19+ B")  # doctest: +SKIP
    >>> along = gbumap.get.oriented_contributions(adata, "LYZ", frame="contrast")  # doctest: +SKIP
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}; got {frame!r}.")
    view = model_view(adata, key)
    batch_size = check_batch_size(batch_size)
    feature_idx = view.feature_indices(genes)
    names = view.feature_names if feature_idx is None else view.feature_names[feature_idx]
    rows = select_obs(adata, obs)
    emb = _embedding(adata, view)

    if frame == "contrast":
        direction, mean_ref, _ = _contrast_frame(adata, view, contrast_key or f"contrast_{key}", group, batch_size)
        centre_of = None
    else:
        if groupby is None:
            raise ValueError(f"frame={frame!r} measures offsets from group centres: pass groupby=, an obs column.")
        labels = _labels(adata, groupby)
        present = sorted({lab for lab in labels[rows] if lab is not None})
        centres = _group_centres(adata, view, labels, present, batch_size)
        centre_of = labels

    out = np.full((len(rows), len(names)), np.nan)
    pos = 0
    cols = slice(None) if feature_idx is None else feature_idx
    for batch, contrib in view.iter_contributions(adata, rows, feature_idx, batch_size=batch_size):
        part = slice(pos, pos + len(batch))
        pos += len(batch)
        if centre_of is None:
            out[part] = np.einsum("d,ndg->ng", direction, contrib - mean_ref[:, cols])
            continue
        for name in {centre_of[i] for i in batch} - {None}:
            inside = np.flatnonzero(centre_of[batch] == name)
            mean_contrib, mean_pos = centres[name]
            offset = emb[batch[inside]] - mean_pos
            length = np.linalg.norm(offset, axis=1, keepdims=True)
            unit = np.divide(offset, length, out=np.full_like(offset, np.nan), where=length > 0)
            terms = contrib[inside].astype(np.float64) - mean_contrib[:, cols]  # (cells, axes, genes)
            radial = np.einsum("nd,ndg->ng", unit, terms)
            if frame == "radial":
                values = radial
            else:
                values = np.linalg.norm(terms - unit[:, :, None] * radial[:, None, :], axis=1)
                values[np.isnan(radial)] = np.nan
            out[part][inside] = values
    return pd.DataFrame(out, index=adata.obs_names[rows].copy(), columns=pd.Index(names, name="gene"))


def cell_contrast(
    adata: AnnData,
    cell: str | int,
    groupby: str,
    *,
    reference: str | None = None,
    key: str = "gbumap",
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Why one cell sits where it does within its group: each gene's exact share of its offset.

    The cell's offset from the mean position of its group (or of
    ``reference``) is exactly ``Σ_g (C_g(cell) − C̄_g(group))``. Each gene's
    term is split as in :func:`gbumap.tl.contrast`: ``scores`` is its
    component along the offset (map units; the scores of all genes sum to
    the offset's length), ``share`` that divided by the length (shares sum
    to 1), ``across`` the length of the rest. The scores are the cell's
    ``"radial"`` values of :func:`oriented_contributions`; like them they do
    not change when the map is rotated or mirrored.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key`` and its embedding.
    cell
        The cell: an obs name, or an integer position.
    groupby
        ``obs`` column of the groups.
    reference
        A group to measure the offset from (default: the cell's own group,
        whose mean includes the cell).
    key
        The model key.
    batch_size
        Cells per batch when averaging the reference group.

    Returns
    -------
    ``pandas.DataFrame`` with ``names``, ``scores``, ``share`` and ``across``,
    strongest push first; ``attrs`` holds ``offset`` (the offset vector),
    ``distance`` and ``reference``.

    Examples
    --------
    >>> gbumap.get.cell_contrast(adata, adata.obs_names[0], "bulk_labels").head()  # doctest: +SKIP
    """
    view = model_view(adata, key)
    batch_size = check_batch_size(batch_size)
    labels = _labels(adata, groupby)
    if isinstance(cell, (int, np.integer)) and not isinstance(cell, bool):
        if not -adata.n_obs <= int(cell) < adata.n_obs:
            raise IndexError(f"Cell position {cell} is outside the {adata.n_obs} cells.")
        row = int(cell) % adata.n_obs
    else:
        where = adata.obs_names.get_indexer([str(cell)])
        if where[0] < 0:
            raise KeyError(f"Cell {cell!r} is not in obs_names (e.g. {list(adata.obs_names[:3])}).")
        row = int(where[0])
    if reference is None:
        reference = labels[row]
        if reference is None:
            raise ValueError(f"Cell {cell!r} has no {groupby!r} label; pass reference= a group to measure from.")
    obs_groups(adata, groupby, reference, min_cells=2, purpose="; a reference needs at least 2", what="reference")
    mean_contrib, mean_pos = _group_centres(adata, view, labels, [reference], batch_size)[reference]
    _, contrib = next(view.iter_contributions(adata, np.array([row])))
    terms = contrib[0].astype(np.float64) - mean_contrib
    offset = _embedding(adata, view)[row] - mean_pos
    distance = float(np.linalg.norm(offset))
    if distance == 0.0:
        raise ValueError(f"Cell {cell!r} sits exactly at the mean position of {reference!r}; there is no offset.")
    along = (offset / distance) @ terms
    across = np.linalg.norm(terms - np.outer(offset / distance, along), axis=0)
    order = np.argsort(-along, kind="stable")
    table = pd.DataFrame(
        {
            "names": view.feature_names[order].astype(str),
            "scores": along[order],
            "share": along[order] / distance,
            "across": across[order],
        }
    )
    table.attrs.update({"offset": offset, "distance": distance, "reference": reference})
    return table
