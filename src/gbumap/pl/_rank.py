"""``gbumap.pl.rank_features``: per-group gene rankings from contributions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._attribution import Reduction
from .._docs import MODEL_GROUPBY, SHOW_SAVE, doc_params
from .._ranking import check_score, rank_groups, score_label, warn_small_groups
from .._results import RANKING_KINDS, block_kind
from .._validation import check_int, obs_column, obs_groups
from ._utils import finish, group_colors, is_signed, model, panel_grid, resolve_reduction

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["rank_features"]


def _reusable(result: Any, groupby: str, key: str, reduction: Reduction, score: str | None) -> bool:
    if block_kind(result) not in RANKING_KINDS or "params" not in result or "names" not in result:
        return False
    params = result["params"]
    return (
        str(params.get("groupby")) == groupby
        and str(params.get("model_key", key)) == key
        and str(params.get("reduction", "l2")) == str(reduction)
        and (score is None or str(params.get("score")) == score)
    )


@doc_params(show_save=SHOW_SAVE, model_groupby=MODEL_GROUPBY)
def rank_features(
    adata: AnnData,
    groupby: str,
    n_genes: int = 10,
    *,
    key: str = "gbumap",
    kind: Literal["bars", "dotplot"] = "bars",
    reduction: Reduction = "l2",
    score: str | None = None,
    groups: Sequence[str] | None = None,
    rank_key: str | None = None,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.2, 3.0),
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    component: Reduction | None = None,
    **kwargs: Any,
) -> Figure | Axes | list[Axes] | dict | None:
    """Top genes per group, ranked by their contributions to the embedding.

    Plots the result of :func:`gbumap.tl.rank_features`: for each group, the
    genes with the highest ranking score. The ranking stored in
    ``uns[rank_key]`` is reused when it was computed for the same
    ``groupby``, model, ``reduction`` and (when given) ``score``; otherwise it
    is computed as :func:`gbumap.tl.rank_features` computes it, and
    ``adata`` is not modified. Axis labels and titles name the statistic
    drawn, as stored in the ranking's ``params["score"]``.

    Parameters
    ----------
    {model_groupby}
    n_genes
        Genes shown per group.
    key
        The model key.
    kind
        ``"bars"``: a panel per group with horizontal bars of the top genes'
        scores (the ranking statistic of :func:`gbumap.tl.rank_features`, by
        default the group's mean L2 contribution × ``max(0, pts −
        pts_rest)``), in the group's colour from ``uns[f"{groupby}_colors"]``. ``"dotplot"``:
        :func:`scanpy.pl.rank_genes_groups_dotplot` with the dot colour set
        to the score (``values_to_plot="scores"`` unless given) and the dot
        size to the fraction of cells expressing the gene.
    reduction
        Per-cell score ranked: ``"l2"``, ``"normed_l2"`` or an axis index
        (signed), as in :func:`gbumap.tl.rank_features`.
    score
        Ranking statistic, as ``score`` in :func:`gbumap.tl.rank_features`
        (default: a stored ranking's, else that function's default).
    groups
        Only these groups (default: all).
    rank_key
        ``uns`` key of a stored ranking (default ``"rank_features_<key>"``).
    ncols
        Panels per row for ``kind="bars"``.
    panel_size
        Width and height of one bar panel, in inches.
    ax
        For ``kind="dotplot"``: draw into this axes.
    {show_save}
    component
        Deprecated name of ``reduction`` (same values).
    **kwargs
        For ``kind="dotplot"``, passed to
        :func:`scanpy.pl.rank_genes_groups_dotplot` (``dendrogram`` defaults
        to ``False``); for ``kind="bars"``, to :meth:`matplotlib.axes.Axes.barh`.

    Returns
    -------
    The figure with ``return_fig=True``; ``None`` when shown; else the list of
    bar axes (``"bars"``) or scanpy's dict of dotplot axes (``"dotplot"``).

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", n_steps=60, verbose=False)
    >>> gbumap.pl.rank_features(adata, "bulk_labels", n_genes=5)  # doctest: +SKIP
    >>> gbumap.pl.rank_features(adata, "bulk_labels", kind="dotplot")  # doctest: +SKIP
    """
    obs_column(adata, groupby)
    if kind not in ("bars", "dotplot"):
        raise ValueError(f"kind must be 'bars' or 'dotplot'; got {kind!r}.")
    n_genes = check_int(n_genes, "n_genes")
    view = model(adata, key)
    reduction = resolve_reduction(reduction, component, view.estimator.n_components, "rank_features")
    rank_key = rank_key or f"rank_features_{key}"

    result = adata.uns.get(rank_key)
    if _reusable(result, groupby, key, reduction, score):
        stored_groups = list(result["names"].dtype.names)
        if groups is not None and any(str(g) not in stored_groups for g in groups):
            result = None
    else:
        result = None
    if result is None:  # ranked here as tl.rank_features ranks, and not written
        labels = obs_groups(adata, groupby, min_groups=2, min_cells=2, purpose="; ranking needs at least 2 per group")
        warn_small_groups(labels.names, labels.sizes, groupby, None)
        result = rank_groups(adata, view, labels, reduction=reduction, score=check_score(score or "weighted_mean"))
    label = score_label(str(result["params"].get("score", "logfc")), reduction, key)

    available = list(result["names"].dtype.names)
    shown = available if groups is None else [str(g) for g in groups]

    if kind == "dotplot":
        import scanpy as sc

        kwargs.setdefault("dendrogram", False)
        kwargs.setdefault("values_to_plot", "scores")
        if kwargs["values_to_plot"] == "scores":
            kwargs.setdefault("colorbar_title", label)
            if is_signed(reduction):
                kwargs.setdefault("cmap", "RdBu_r")
                kwargs.setdefault("vcenter", 0.0)
        # the plot reads the expression of the genes it shows only: a cells × (shown genes) matrix, read
        # column-wise from Dask or backed input without loading the others
        shown_genes = pd.unique(
            np.concatenate([np.asarray(result["names"][g])[: int(n_genes)].astype(str) for g in shown])
        )
        if view.spec.use_rep is not None:  # columns of obsm are taken by position: keep them all
            shown_genes = np.asarray(view.feature_names).astype(str)
        expression = view.matrix(adata, features=np.asarray(shown_genes), lazy=True)
        if hasattr(expression, "compute"):
            expression = expression.compute()
        shell = AnnData(
            X=expression,
            obs=adata.obs[[groupby]].copy(),
            var=pd.DataFrame(index=pd.Index(shown_genes)),
        )
        shell.uns[rank_key] = result
        if f"{groupby}_colors" in adata.uns:
            shell.uns[f"{groupby}_colors"] = list(adata.uns[f"{groupby}_colors"])
        plot = sc.pl.rank_genes_groups_dotplot(
            shell,
            groups=shown,
            n_genes=int(n_genes),
            groupby=groupby,
            key=rank_key,
            ax=ax,
            show=False,
            save=False,
            return_fig=True,
            **kwargs,
        )
        plot.make_figure()
        return finish(plot.fig, plot.get_axes(), name="rank_features", show=show, save=save, return_fig=return_fig)

    colors = group_colors(adata, groupby)
    sizes = adata.obs[groupby].astype(str).value_counts()
    fig, axes = panel_grid(len(shown), ncols, panel_size, hspace=0.45, wspace=0.9)
    kwargs.setdefault("height", 0.7)
    fixed_color = kwargs.pop("color", None)
    for ax_, group in zip(axes, shown):
        names = np.asarray(result["names"][group])[: int(n_genes)].astype(str)
        scores = np.asarray(result["scores"][group], dtype=np.float64)[: int(n_genes)]
        y = np.arange(len(names))
        bar_color = fixed_color if fixed_color is not None else colors.get(group, "C0")
        ax_.barh(y, scores, color=bar_color, **kwargs)
        ax_.set_yticks(y, labels=names)
        ax_.invert_yaxis()
        ax_.set_title(f"{group} (n={int(sizes.get(group, 0)):,})", fontsize="medium")
        ax_.set_xlabel(label, fontsize="small")
        ax_.tick_params(axis="y", labelsize="small")
        if is_signed(reduction):
            ax_.axvline(0, color="black", linewidth=0.6)
        ax_.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"{key}: top genes per {groupby}, ranked by {label}", y=1.0)
    return finish(fig, axes, name="rank_features", show=show, save=save, return_fig=return_fig)
