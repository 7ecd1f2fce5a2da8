"""Per-gene summaries over cells: mean contributions of a selection, each cell's top gene."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._anndata_input import select_cells
from .._attribution import Reduction, check_reduction
from .._docs import CELL_SELECTION, KEY_BATCH, PBMC_EXAMPLE, doc_params
from .._validation import check_int
from .._view import ModelView, model_view

__all__ = ["mean_contributions", "top_feature_groups"]


def mean_over(adata: AnnData, view: ModelView, rows: np.ndarray, reduction: Reduction, batch_size: int) -> np.ndarray:
    """Mean of the reduced contribution of every model feature over ``rows``."""
    total = np.zeros(len(view.feature_names))
    for _, values in view.iter_reduced(adata, rows, reduction, batch_size=batch_size):
        total += values.sum(axis=0, dtype=np.float64)
    return total / len(rows)


@doc_params(cell_selection=CELL_SELECTION, key_batch=KEY_BATCH)
def mean_contributions(
    adata: AnnData,
    obs: np.ndarray | Sequence[str] | Sequence[int] | None = None,
    *,
    groupby: str | None = None,
    group: str | Sequence[str] | None = None,
    reduction: Reduction = "l2",
    key: str = "gbumap",
    batch_size: int = 4096,
) -> pd.Series:
    """Mean contribution of every gene over a selection of cells.

    The numbers behind :func:`gbumap.pl.feature_bars`, for all the model's genes.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    {cell_selection}
    reduction
        ``"l2"``, ``"normed_l2"`` or a signed axis index.
    {key_batch}

    Returns
    -------
    pandas.Series
        Indexed by gene, in the model's gene order, named after the selection.

    Examples
    --------
    >>> m = gbumap.get.mean_contributions(adata, groupby="bulk_labels", group="CD14+ Monocyte")  # doctest: +SKIP
    >>> m.nlargest(5)  # doctest: +SKIP
    """
    view = model_view(adata, key)
    reduction = check_reduction(reduction, view.estimator.n_components)
    rows, description = select_cells(adata, obs, groupby, group)
    means = mean_over(adata, view, rows, reduction, batch_size)
    return pd.Series(means, index=pd.Index(view.feature_names, name="gene"), name=description)


def l2_summary(
    adata: AnnData, view: ModelView, rows: np.ndarray, direction: str = "up", batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the rows' L2 contributions: each feature's sum, each row's total, each row's winner.

    The winner is the feature with the largest L2 contribution; with
    ``direction="up"`` only features above their baseline value in the cell
    compete (a cell with none falls back to all of them).
    """
    if direction not in ("up", "any"):
        raise ValueError(f"direction must be 'up' or 'any'; got {direction!r}.")
    baseline = view.estimator.baseline_
    sums = np.zeros(len(view.feature_names))
    totals = np.empty(len(rows))
    winners = np.empty(len(rows), dtype=np.int64)
    pos = 0
    for batch, values in view.iter_reduced(adata, rows, "l2", batch_size=batch_size):
        values = values.astype(np.float64)
        sums += values.sum(axis=0)
        totals[pos : pos + len(batch)] = values.sum(axis=1)
        if direction == "up":
            block = view.matrix(adata, rows=batch)
            dense = block.toarray() if sp.issparse(block) else np.asarray(block)
            up = dense.astype(np.float64) > baseline
            up[~up.any(axis=1)] = True
            values = np.where(up, values, -1.0)  # magnitudes are >= 0: any gene that is up wins
        winners[pos : pos + len(batch)] = np.argmax(values, axis=1)
        pos += len(batch)
    return sums, totals, winners


@doc_params(pbmc_example=PBMC_EXAMPLE)
def top_feature_groups(
    adata: AnnData,
    n_top: int | None = 10,
    *,
    key: str = "gbumap",
    direction: Literal["up", "any"] = "up",
    batch_size: int = 4096,
) -> pd.Series:
    """Each cell's top feature: the gene whose contribution moves it furthest.

    For every cell the gene with the largest L2 contribution (the norm of its
    contribution vector over the embedding axes) among the genes the cell
    expresses above the baseline is its *winner*. The ``n_top`` genes that
    win most often become the categories; cells won by any other gene get a
    missing value. Nothing is written to ``adata``; to keep the result, assign
    it yourself (``adata.obs["top_feature"] = gbumap.get.top_feature_groups(adata)``).

    Parameters
    ----------
    adata
        AnnData with a model fitted by :func:`gbumap.tl.fit` under ``key``
        (contributions from :func:`gbumap.tl.contributions` make it faster).
    n_top
        How many of the most frequent winners to keep as categories
        (``None``: all winners).
    key
        The model key.
    direction
        ``"up"`` (default): only genes above their baseline value in the cell
        may win (with ``baseline="mean"``, genes the cell expresses more than
        the average cell; with ``"zero"``, any gene it expresses), so a cell
        is never coloured by a gene it lacks. ``"any"``: every gene may win,
        including genes whose low level places the cell (negative markers).
    batch_size
        Cells per batch when rebuilding contributions.

    Returns
    -------
    pandas.Series
        Categorical, indexed by ``obs_names`` and named ``"top_feature_<key>"``.
        Categories are gene names, most frequent winner first; ``NaN`` for
        cells whose winner is not among them.

    {pbmc_example}
    >>> top = gbumap.get.top_feature_groups(adata, n_top=5)
    >>> len(top.cat.categories)
    5
    """
    n_top = check_int(n_top, "n_top", optional=True)
    view = model_view(adata, key)
    _, _, winners = l2_summary(adata, view, np.arange(adata.n_obs), direction, batch_size)
    names = view.feature_names
    counts = np.bincount(winners, minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    if n_top is not None:
        order = order[: int(n_top)]
    labels = pd.Categorical.from_codes(
        pd.Index(order).get_indexer(winners), categories=pd.Index(names[order], dtype=object)
    )
    return pd.Series(labels, index=adata.obs_names.copy(), name=f"top_feature_{key}")
