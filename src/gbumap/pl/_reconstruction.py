"""``gbumap.pl.reconstruction``: the embedding next to its sum of contributions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import PBMC_EXAMPLE, SHOW_SAVE, doc_params, figure_returns
from ._utils import color_columns, embedding_key, finish, model, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["reconstruction"]


def _rebuilt(adata: AnnData, key: str, batch_size: int) -> np.ndarray:
    """``Σ_g C[i, :, g]`` for every cell, in float64."""
    view = model(adata, key)
    out = np.empty((adata.n_obs, view.estimator.n_components))
    for rows, contrib in view.iter_contributions(adata, np.arange(adata.n_obs), batch_size=batch_size):
        out[rows] = contrib.sum(axis=-1, dtype=np.float64)
    return out


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the three axes"), pbmc_example=PBMC_EXAMPLE)
def reconstruction(
    adata: AnnData,
    *,
    key: str = "gbumap",
    color: str | None = None,
    bins: int = 50,
    size: float | None = None,
    panel_size: tuple[float, float] = (4.0, 3.6),
    batch_size: int = 4096,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | list[Axes] | None:
    """Check by eye that the contributions add up to the embedding.

    Three panels: the embedding ``obsm["X_<key>"]``; the embedding rebuilt
    from the per-gene contributions (``gbumap.get.contributions`` summed
    over genes); and a histogram of each cell's error
    ``max_axis |Σ_g C − Z| / max |Z|``. The figure title carries the largest
    of these, which is ``gbumap.get.reconstruction_error(adata, key)["max_rel"]``,
    measured here from what ``adata`` stores.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    key
        The model key (the embedding is ``obsm["X_<key>"]``).
    color
        ``obs`` column or gene to colour both scatter panels by (its palette
        from ``uns[f"{color}_colors"]``).
    bins
        Histogram bins.
    size
        Point size for the scatter panels.
    panel_size
        Width and height of one panel, in inches.
    batch_size
        Cells per batch when rebuilding contributions.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` for both scatter panels.

    {returns}

    {pbmc_example}
    >>> gbumap.pl.reconstruction(adata, color="bulk_labels")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    emb = np.asarray(adata.obsm[embedding_key(adata, key)], dtype=np.float64)
    rebuilt = _rebuilt(adata, key, batch_size)
    scale = float(np.abs(emb).max()) or 1.0
    per_cell_abs = np.abs(rebuilt - emb).max(axis=1)
    per_cell = per_cell_abs / scale
    max_abs = float(per_cell_abs.max())
    max_rel = max_abs / scale

    frame, uns = color_columns(adata, color)
    rebuilt_key = f"{key}_rebuilt"
    shell = plot_shell(adata, key, extra_obsm={f"X_{rebuilt_key}": rebuilt.astype(np.float32)}, obs=frame, uns=uns)
    categorical = color is not None and isinstance(shell.obs[color].dtype, pd.CategoricalDtype)
    legend_space = 1.15 if categorical else 0.3
    fig = plt.figure(figsize=(panel_size[0] * (3.2 + legend_space), panel_size[1]))
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 0.12, 1, legend_space, 1], wspace=0.05)
    axes = [fig.add_subplot(grid[0, i]) for i in (0, 2, 4)]
    legend_loc = kwargs.pop("legend_loc", "right margin")
    common = dict(color=color, size=size, show=False, save=False, **kwargs)
    # one legend (on the rebuilt panel) is enough: both panels share the colours
    sc.pl.embedding(shell, basis=key, ax=axes[0], title=f"obsm['X_{key}']", legend_loc=None, **common)
    sc.pl.embedding(
        shell, basis=rebuilt_key, ax=axes[1], title="sum of gene contributions", legend_loc=legend_loc, **common
    )
    if axes[1].get_xlabel():
        axes[1].set_xlabel(f"{key}1 (rebuilt)")
        axes[1].set_ylabel(f"{key}2 (rebuilt)")
    exponent = int(np.floor(np.log10(max_rel))) if max_rel > 0 else 0
    hist = axes[2]
    hist.hist(per_cell / 10.0**exponent, bins=bins, color="0.35")
    hist.set_xlabel("per-cell relative error" + (f" (×1e{exponent})" if exponent else ""))
    hist.set_ylabel("cells")
    hist.set_title("max over axes |Σ_g C − Z| / max|Z|", fontsize="medium")
    hist.spines[["top", "right"]].set_visible(False)
    fig.suptitle(
        f"{key}: max relative error {max_rel:.2e} (max absolute {max_abs:.2e}, {adata.n_obs:,} cells)", y=1.04
    )
    return finish(fig, axes, name="reconstruction", show=show, save=save, return_fig=return_fig)
