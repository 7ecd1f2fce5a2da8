"""``gbumap.pl.top_features``: colour each cell by the gene that moves it most."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from anndata import AnnData

from .._docs import PBMC_EXAMPLE, SHOW_SAVE, doc_params, figure_returns
from ..get._summaries import top_feature_groups as _get_top_feature_groups
from ._utils import finish, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["top_feature_groups", "top_features"]


def top_feature_groups(*args: Any, **kwargs: Any) -> pd.Series:
    """Deprecated: use :func:`gbumap.get.top_feature_groups` (it returns data, not a figure).

    Examples
    --------
    >>> gbumap.get.top_feature_groups(adata, n_top=5)  # doctest: +SKIP
    """
    warnings.warn(
        "gbumap.pl.top_feature_groups is deprecated and will be removed in the next release; "
        "use gbumap.get.top_feature_groups (same arguments).",
        FutureWarning,
        stacklevel=2,
    )
    return _get_top_feature_groups(*args, **kwargs)


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the axes"), pbmc_example=PBMC_EXAMPLE)
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
    baseline, see :func:`gbumap.get.top_feature_groups`). Only
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
        Which genes may win, as in :func:`gbumap.get.top_feature_groups`.
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

    {returns}

    {pbmc_example}
    >>> gbumap.pl.top_features(adata, n_top=8)  # doctest: +SKIP
    """
    import scanpy as sc

    groups = _get_top_feature_groups(adata, n_top, key=key, direction=direction)
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
