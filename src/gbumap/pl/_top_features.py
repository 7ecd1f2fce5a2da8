"""``gbumap.pl.top_features``: colour each cell by the gene that moves it most."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._docs import SHOW_SAVE, doc_params
from ._utils import finish, iter_component, model, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["top_feature_groups", "top_features"]


def _winners(adata: AnnData, key: str, batch_size: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Index of each cell's largest-L2 feature, and the model's feature names.

    With ``direction="up"`` only features above their baseline value in the
    cell compete (a cell with none falls back to all of them).
    """
    if direction not in ("up", "any"):
        raise ValueError(f"direction must be 'up' or 'any'; got {direction!r}.")
    view = model(adata, key)
    baseline = view.estimator.baseline_
    winners = np.empty(adata.n_obs, dtype=np.int64)
    for rows, values in iter_component(adata, view, np.arange(adata.n_obs), "l2", batch_size=batch_size):
        if direction == "up":
            block = view.matrix(adata, rows=rows)
            dense = block.toarray() if sp.issparse(block) else np.asarray(block)
            up = dense.astype(np.float64) > baseline
            up[~up.any(axis=1)] = True
            values = np.where(up, values, -1.0)  # magnitudes are >= 0: any gene that is up wins
        winners[rows] = np.argmax(values, axis=1)
    return winners, view.feature_names


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
    expresses above the baseline is its *winner*. The
    ``n_top`` genes that win most often become the categories; cells won by
    any other gene get a missing value. Nothing is written to ``adata``; to
    keep the result, assign it yourself
    (``adata.obs["top_feature"] = gbumap.pl.top_feature_groups(adata)``).

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

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.glassbox_umap(adata, n_steps=60, verbose=False)
    >>> top = gbumap.pl.top_feature_groups(adata, n_top=5)
    >>> len(top.cat.categories)
    5
    """
    if n_top is not None and (isinstance(n_top, bool) or int(n_top) < 1):
        raise ValueError(f"n_top must be a positive integer or None; got {n_top!r}.")
    winners, names = _winners(adata, key, batch_size, direction)
    counts = np.bincount(winners, minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    if n_top is not None:
        order = order[: int(n_top)]
    categories = names[order]
    labels = pd.Categorical.from_codes(
        pd.Index(order).get_indexer(winners), categories=pd.Index(categories, dtype=object)
    )
    return pd.Series(labels, index=adata.obs_names.copy(), name=f"top_feature_{key}")


@doc_params(show_save=SHOW_SAVE)
def top_features(
    adata: AnnData,
    n_top: int = 10,
    *,
    key: str = "gbumap",
    direction: Literal["up", "any"] = "up",
    basis: str | None = None,
    palette: str | Sequence[str] | None = None,
    na_color: str = "lightgray",
    size: float | None = None,
    title: str | None = None,
    legend_loc: str | None = "right margin",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | Axes | None:
    """Embedding coloured by each cell's top feature.

    Each cell takes the colour of the gene that contributes most to its
    position (largest L2 contribution among the genes it expresses above the
    baseline, see :func:`top_feature_groups`). Only
    the ``n_top`` genes that win most often get a colour and a legend entry;
    the other cells are drawn light grey, beneath the coloured ones. Drawn by
    :func:`scanpy.pl.embedding`.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    n_top
        Number of coloured genes (legend entries).
    key
        The model key.
    direction
        Which genes may win, as in :func:`top_feature_groups`.
    basis
        ``obsm`` basis to draw on (default: the model's own embedding,
        ``obsm["X_<key>"]``); e.g. ``"umap"`` to show the same winners on a
        classic UMAP.
    palette
        Colours for the genes, as in :func:`scanpy.pl.embedding`.
    na_color
        Colour of the cells whose top gene is not among the ``n_top``.
    size
        Point size (scanpy's default depends on the number of cells).
    title
        Panel title (default names the model and how many cells are grey).
    legend_loc
        Where the gene legend goes, as in :func:`scanpy.pl.embedding`.
    ax
        Draw into this matplotlib axes.
    {show_save}
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``frameon``, ``legend_fontsize``, ...).

    Returns
    -------
    The figure with ``return_fig=True``; ``None`` when shown; else the axes.

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.glassbox_umap(adata, n_steps=60, verbose=False)
    >>> gbumap.pl.top_features(adata, n_top=8)  # doctest: +SKIP
    """
    import scanpy as sc

    groups = top_feature_groups(adata, n_top, key=key, direction=direction)
    column = "top feature"
    frame = pd.DataFrame({column: groups.array}, index=adata.obs_names.copy())
    basis = key if basis is None else basis
    shell = plot_shell(adata, basis, obs=frame)
    if palette is not None:
        kwargs["palette"] = palette
    n_other = int(groups.isna().sum())
    if title is None:
        title = f"{key}: top gene per cell"
        if n_other:
            title += f"\n(grey: {n_other:,} cells led by other genes)"
    ax = sc.pl.embedding(
        shell,
        basis=basis,
        color=column,
        na_color=na_color,
        na_in_legend=False,
        size=size,
        title=title,
        legend_loc=legend_loc,
        ax=ax,
        show=False,
        save=False,
        **kwargs,
    )
    return finish(ax.figure, ax, name="top_features", show=show, save=save, return_fig=return_fig)
