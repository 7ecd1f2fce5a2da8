"""``gbumap.pl.batch_correction``: what a model's batch correction did, on the map and per gene."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._docs import SHOW_SAVE, doc_params, figure_returns
from ..get._correction import batch_correction as correction_table
from ._utils import finish, model, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["batch_correction"]


def _gene_parts(adata: AnnData, key: str, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per gene, the mean over cells of the L2 size of its expression part and of its correction part."""
    view = model(adata, key)
    sums = {part: np.zeros(len(view.feature_names)) for part in ("expression", "correction")}
    cells = np.arange(adata.n_obs)
    for part in sums:
        for _, values in view.iter_reduced(adata, cells, "l2", batch_size=batch_size, part=part):
            sums[part] += values.sum(axis=0, dtype=np.float64)
    return view.feature_names, sums["expression"] / adata.n_obs, sums["correction"] / adata.n_obs


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the three axes"))
def batch_correction(
    adata: AnnData,
    *,
    key: str = "gbumap",
    n_genes: int = 15,
    size: float | None = None,
    panel_size: tuple[float, float] = (4.2, 3.8),
    batch_size: int = 4096,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | list[Axes] | None:
    """What the batch correction moved: the map coloured by batch and by shift, and the genes it acted through.

    Three panels for a model fitted with ``batch_key``: the integrated map
    coloured by batch; the same map coloured by each cell's map shift (the
    length of the correction part of its position,
    :func:`gbumap.get.batch_correction`'s ``map_shift``, in map units); and,
    for the ``n_genes`` genes with the largest mean correction part, the mean
    L2 size of each gene's expression part beside its correction part
    (:func:`gbumap.get.contributions` with ``part=``).

    Parameters
    ----------
    adata
        AnnData with a batch-corrected model under ``key``.
    key
        The model key.
    n_genes
        Genes in the bar panel.
    size
        Point size of the scatter panels.
    panel_size
        Width and height of one panel, in inches.
    batch_size
        Cells per batch when reading contributions.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` for both scatter panels.

    {returns}

    Examples
    --------
    >>> gbumap.tl.glassbox_umap(adata, batch_key="sample")  # doctest: +SKIP
    >>> gbumap.pl.batch_correction(adata)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    table = correction_table(adata, key, batch_size=batch_size)
    names, expression, correction = _gene_parts(adata, key, batch_size)
    order = np.argsort(-correction, kind="stable")[: max(1, int(n_genes))]
    shell = plot_shell(adata, key, obs=table[["batch", "map_shift"]])
    fig = plt.figure(figsize=(panel_size[0] * 3.5, panel_size[1]))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.25, 1.1, 1], wspace=0.45)
    axes = [fig.add_subplot(grid[0, i]) for i in range(3)]
    common = dict(size=size, show=False, save=False, **kwargs)
    sc.pl.embedding(shell, basis=key, color="batch", ax=axes[0], title="integrated map, by batch", **common)
    sc.pl.embedding(
        shell, basis=key, color="map_shift", ax=axes[1], title="map shift from the correction (map units)",
        color_map="viridis", **common,
    )
    bars = axes[2]
    pos = np.arange(len(order))
    bars.barh(pos - 0.2, expression[order], height=0.4, color="0.55", label="expression part")
    bars.barh(pos + 0.2, correction[order], height=0.4, color="tab:red", label="correction part")
    bars.set_yticks(pos, names[order], fontsize="small")
    bars.invert_yaxis()
    bars.set_xlabel("mean |contribution| over cells (L2 over axes, map units)")
    bars.set_title(f"genes the correction acts through (top {len(order)})", fontsize="medium")
    bars.legend(frameon=False, fontsize="small", loc="lower right")
    bars.spines[["top", "right"]].set_visible(False)
    fig.suptitle(
        f"{key}: batch correction of {adata.n_obs:,} cells in {table['batch'].nunique()} batches; "
        f"median map shift {table['map_shift'].median():.3g}",
        y=1.03,
    )
    return finish(fig, axes, name="batch_correction", show=show, save=save, return_fig=return_fig)
