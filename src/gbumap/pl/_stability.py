"""``gbumap.pl.stability``: where the map changes with the seed, and how stable a group's top genes are."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import SHOW_SAVE, doc_params, figure_returns
from .._results import find_result, select_group
from .._validation import check_int
from ._utils import finish, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["stability"]


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the list of axes"))
def stability(
    adata: AnnData,
    group: str | None = None,
    *,
    key: str = "stability_gbumap",
    n_genes: int = 10,
    basis: str | None = None,
    size: float | None = None,
    color_map: str = "viridis",
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | list[Axes] | None:
    """The map coloured by each cell's spread over seeds, and a group's top genes with their stability.

    Left: the reference embedding coloured by ``obs["<key>_spread"]`` (RMS
    distance of a cell's aligned positions over the further runs from its
    reference position, in map units), from :func:`gbumap.tl.stability`.
    Right, when the result holds a ranking and ``group`` is given: the
    group's first ``n_genes`` genes by median rank, as horizontal bars of the
    reference run's score; a bar is solid when the gene is in the top
    ``n_top`` in at least 80% of the runs and pale otherwise, and the text
    beside it gives ``top_fraction`` and the rank's interquartile range.

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.stability` ran.
    group
        A group of the ranking's ``groupby`` to show the genes of.
    key
        The stability result's ``uns`` key.
    n_genes
        Genes shown for ``group``.
    basis
        ``obsm`` basis (default the reference model's embedding).
    size
        Point size.
    color_map
        Colour map of the spread.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding`.

    {returns}

    Examples
    --------
    >>> gbumap.tl.stability(adata, groupby="bulk_labels")  # doctest: +SKIP
    >>> gbumap.pl.stability(adata, "CD14+ Monocyte")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    result = find_result(adata, key, "stability")
    column = f"{key}_spread"
    if column not in adata.obs:
        raise KeyError(f"No stability result under obs[{column!r}] beside uns[{key!r}]; run gbumap.tl.stability first.")
    n_genes = check_int(n_genes, "n_genes")
    params = result["params"]
    has_ranking = "names" in result
    if group is not None:
        if not has_ranking:
            raise ValueError(f"uns[{key!r}] holds no ranking; rerun gbumap.tl.stability with groupby=.")
        select_group(result, key, group)
    basis = str(params["model_key"]) if basis is None else basis
    frame = pd.DataFrame({"spread": np.asarray(adata.obs[column], dtype=np.float64)}, index=adata.obs_names.copy())
    shell = plot_shell(adata, basis, obs=frame)

    n_panels = 2 if group is not None else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.0 * n_panels + (0.5 if n_panels == 2 else 0), 4.5), squeeze=False)
    axes = list(axes.ravel())
    n_runs = int(params["n_models"])
    sc.pl.embedding(
        shell, basis=basis, color="spread", color_map=color_map, size=size, ax=axes[0], show=False, save=False,
        title=f"spread over {n_runs} seeds (map units)", **kwargs,
    )
    if group is not None:
        ax = axes[1]
        g = str(group)
        names = [str(n) for n in np.asarray(result["names"][g])[: int(n_genes)]]
        scores = np.asarray(result["scores"][g], dtype=np.float64)[: len(names)]
        top = np.asarray(result["top_fraction"][g], dtype=np.float64)[: len(names)]
        iqr = np.asarray(result["rank_iqr"][g], dtype=np.float64)[: len(names)]
        y = np.arange(len(names))[::-1]
        colors = ["#1f77b4" if t >= 0.8 else "#aec7e8" for t in top]
        ax.barh(y, scores, color=colors, height=0.7)
        span = float(np.nanmax(np.abs(scores))) if len(scores) else 1.0
        for yi, s, t, q in zip(y, scores, top, iqr):
            ax.text(max(s, 0) + 0.02 * span, yi, f"{t:.0%} · IQR {q:g}", va="center", fontsize=7)
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlim(min(0.0, float(np.nanmin(scores)) * 1.1), span * 1.45)
        ax.set_xlabel("reference score", fontsize=8)
        ax.set_title(
            f"{g}: top {len(names)} by median rank\n(solid: in the top {int(params['n_top'])} in ≥ 80% of runs)",
            fontsize=9,
        )
        ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, axes, name="stability", show=show, save=save, return_fig=return_fig)
