"""``gbumap.pl.contribution`` and ``gbumap.pl.feature_bars``: single genes and cell selections."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import select_cells
from .._attribution import Reduction, reduction_label
from .._docs import CELL_SELECTION, PBMC_EXAMPLE, SHOW_SAVE, doc_params, figure_returns
from .._validation import check_int
from ..get._summaries import mean_contributions as _get_mean_contributions
from ..get._summaries import mean_over
from ._utils import (
    feature_indices,
    finish,
    group_colors,
    is_signed,
    model,
    panel_grid,
    plot_shell,
    reduced_values,
    resolve_reduction,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["contribution", "feature_bars", "mean_contributions"]


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the list of axes"), pbmc_example=PBMC_EXAMPLE)
def contribution(
    adata: AnnData,
    genes: str | Sequence[str],
    *,
    reduction: Reduction = "l2",
    key: str = "gbumap",
    basis: str | None = None,
    shared_scale: bool = False,
    cmap: str | None = None,
    size: float | None = None,
    ncols: int = 4,
    panel_size: tuple[float, float] = (4.0, 3.6),
    batch_size: int = 4096,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    component: Reduction | None = None,
    **kwargs: Any,
) -> Figure | list[Axes] | None:
    """Embedding coloured by genes' contributions, one panel per gene.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    genes
        One gene or several (each must be a feature of the model).
    reduction
        What colours a cell: ``"l2"`` (how far the gene moves the cell),
        ``"normed_l2"`` (that distance as a share of the cell's total over
        all genes) or an axis index (the signed push along that axis, on a
        diverging colormap centred at 0 with limits ``±max|value|``).
    key
        The model key.
    basis
        ``obsm`` basis to draw on (default ``obsm["X_<key>"]``).
    shared_scale
        One colour scale for all panels (the largest range among the genes)
        instead of one per gene, so panels compare directly.
    cmap
        Colormap (default: scanpy's for ``"l2"``/``"normed_l2"``, ``"RdBu_r"``
        for a signed axis).
    size
        Point size.
    ncols
        Panels per row.
    panel_size
        Width and height of one panel, in inches.
    batch_size
        Cells per batch when rebuilding contributions.
    {show_save}
    component
        Deprecated name of ``reduction`` (same values).
    **kwargs
        Passed to :func:`scanpy.pl.embedding` for every panel.

    {returns}

    {pbmc_example}
    >>> gbumap.pl.contribution(adata, ["LYZ", "CST3"], shared_scale=True)  # doctest: +SKIP
    >>> gbumap.pl.contribution(adata, "LYZ", reduction=0)  # signed push along axis 1  # doctest: +SKIP
    """
    view = model(adata, key)
    reduction = resolve_reduction(reduction, component, view.estimator.n_components, "contribution")
    idx, names = feature_indices(view, genes)
    values = reduced_values(adata, view, reduction, idx, batch_size=batch_size)
    basis = key if basis is None else basis
    fig, axes = gene_panels(
        adata,
        values,
        names,
        signed=is_signed(reduction),
        label=reduction_label(reduction, key),
        basis=basis,
        shared_scale=shared_scale,
        cmap=cmap,
        size=size,
        ncols=ncols,
        panel_size=panel_size,
        **kwargs,
    )
    return finish(fig, axes, name="contribution", show=show, save=save, return_fig=return_fig)


def mean_contributions(*args: Any, **kwargs: Any) -> pd.Series:
    """Deprecated: use :func:`gbumap.get.mean_contributions` (it returns data, not a figure).

    Examples
    --------
    >>> gbumap.get.mean_contributions(adata, groupby="bulk_labels", group="CD14+ Monocyte")  # doctest: +SKIP
    """
    warnings.warn(
        "gbumap.pl.mean_contributions is deprecated and will be removed in the next release; "
        "use gbumap.get.mean_contributions (same arguments, reduction= instead of component=).",
        FutureWarning,
        stacklevel=2,
    )
    if "component" in kwargs:
        kwargs["reduction"] = kwargs.pop("component")
    return _get_mean_contributions(*args, **kwargs)


@doc_params(
    show_save=SHOW_SAVE, cell_selection=CELL_SELECTION, returns=figure_returns("the axes"), pbmc_example=PBMC_EXAMPLE
)
def feature_bars(
    adata: AnnData,
    obs: np.ndarray | Sequence[str] | Sequence[int] | None = None,
    *,
    groupby: str | None = None,
    group: str | Sequence[str] | None = None,
    reduction: Reduction = "l2",
    n_genes: int = 15,
    key: str = "gbumap",
    color: str | None = None,
    ax: Axes | None = None,
    batch_size: int = 4096,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    component: Reduction | None = None,
    **kwargs: Any,
) -> Figure | Axes | None:
    """Horizontal bars of the mean contribution per gene for a selection of cells.

    The static twin of the bar chart in :func:`explore`. Genes are ranked by
    their mean over the selected cells (by its absolute value for a signed
    axis, with positive bars red and negative bars blue).

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    {cell_selection}
    reduction
        ``"l2"`` (mean distance each gene moves the cells), ``"normed_l2"``
        (mean share of each cell's total) or an axis index (mean signed push
        along that axis).
    n_genes
        Number of bars.
    key
        The model key.
    color
        Bar colour (default: the group's colour from ``uns[f"{groupby}_colors"]``
        when one group is selected, else matplotlib's first colour).
    ax
        Draw into this matplotlib axes.
    batch_size
        Cells per batch.
    {show_save}
    component
        Deprecated name of ``reduction`` (same values).
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.barh`.

    {returns}

    {pbmc_example}
    >>> gbumap.pl.feature_bars(adata, groupby="bulk_labels", group="CD14+ Monocyte")  # doctest: +SKIP
    >>> gbumap.pl.feature_bars(adata, adata.obs["louvain"] == "3", reduction=0)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    n_genes = check_int(n_genes, "n_genes")
    view = model(adata, key)
    reduction = resolve_reduction(reduction, component, view.estimator.n_components, "feature_bars")
    rows, description = select_cells(adata, obs, groupby, group)
    means = pd.Series(mean_over(adata, view, rows, reduction, batch_size), index=view.feature_names, name=description)
    signed = is_signed(reduction)
    rank = means.abs() if signed else means
    top = rank.sort_values(ascending=False, kind="stable").index[: int(n_genes)]
    values = means[top].to_numpy()
    n_cells = len(rows)

    if color is None and not signed:
        single = group if isinstance(group, str) else (group[0] if group is not None and len(group) == 1 else None)
        color = group_colors(adata, groupby).get(str(single), "C0") if groupby is not None and single else "C0"
    bar_colors = np.where(values >= 0, "#b2182b", "#2166ac") if signed and color is None else color

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 0.28 * len(top) + 1.2))
    else:
        fig = ax.figure
    y = np.arange(len(top))
    kwargs.setdefault("height", 0.7)
    ax.barh(y, values, color=bar_colors, **kwargs)
    ax.set_yticks(y, labels=list(top))
    ax.invert_yaxis()
    if signed:
        ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(f"mean {reduction_label(reduction, key)}")
    ax.set_title(f"{means.name} ({n_cells:,} cells)", fontsize="medium")
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, name="feature_bars", show=show, save=save, return_fig=return_fig)


def gene_panels(
    adata: AnnData,
    values: np.ndarray,
    names: Sequence[str],
    *,
    signed: bool,
    label: str,
    basis: str,
    shared_scale: bool,
    cmap: str | None,
    size: float | None,
    ncols: int,
    panel_size: tuple[float, float],
    **kwargs: Any,
):
    """One embedding panel per gene, coloured by ``values[:, j]`` (signed: diverging, centred at 0)."""
    import scanpy as sc

    if signed:
        limits = np.nanmax(np.abs(values), axis=0, initial=0.0)
        if shared_scale:
            limits[:] = limits.max()
        limits[limits == 0] = 1.0
        vmin, vmax = list(-limits), list(limits)
        cmap = "RdBu_r" if cmap is None else cmap
    elif shared_scale:
        vmin = [0.0] * len(names)
        vmax = [float(np.nanmax(values, initial=0.0)) or 1.0] * len(names)
    else:
        vmin = vmax = [None] * len(names)

    fig, axes = panel_grid(len(names), ncols, panel_size, wspace=0.3)
    for j, (ax, gene) in enumerate(zip(axes, names)):
        frame = pd.DataFrame({gene: values[:, j]}, index=adata.obs_names.copy())
        shell = plot_shell(adata, basis, obs=frame)
        if signed:
            # strongest pushes (either sign) on top, not only the most positive ones
            shell = shell[np.argsort(np.nan_to_num(np.abs(values[:, j]), nan=-1.0), kind="stable")].copy()
        sc.pl.embedding(
            shell,
            basis=basis,
            color=gene,
            sort_order=not signed,
            cmap=cmap,
            vmin=vmin[j],
            vmax=vmax[j],
            size=size,
            title=f"{gene}\n{label}",
            ax=ax,
            show=False,
            save=False,
            **kwargs,
        )
    return fig, axes
