"""``gbumap.pl.modality_shares``: how much of each cell's position each modality gives."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import SHOW_SAVE, doc_params, figure_returns
from .._validation import obs_column
from ..get._modalities import modality_contributions
from ._utils import finish, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["modality_shares"]


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the axes"))
def modality_shares(
    adata: AnnData,
    modality: str | None = None,
    *,
    groupby: str | None = None,
    key: str = "gbumap",
    size: float | None = None,
    panel_size: tuple[float, float] = (4.4, 3.8),
    batch_size: int = 4096,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | list[Axes] | None:
    """The map coloured by one modality's share of each cell's position, and the shares per group.

    A cell's position is exactly the sum of its modalities' parts
    (:func:`gbumap.get.modality_contributions`); the share of a modality is
    the length of its part over the sum of the lengths of all parts, from 0
    (the cell is placed by the other modalities alone) to 1.

    Parameters
    ----------
    adata
        AnnData (or MuData) with a multimodal model under ``key``.
    modality
        The modality whose share colours the map (default: the last one, e.g.
        the proteins of ``["GEX", "ADT"]``).
    groupby
        ``obs`` column: adds a panel with each group's mean share of every
        modality (stacked bars).
    key
        The model key.
    size
        Point size of the scatter panel.
    panel_size
        Width and height of one panel, in inches.
    batch_size
        Cells per batch when reading contributions.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding`.

    {returns}

    Examples
    --------
    >>> import gbumap
    >>> from gbumap.datasets import simulate
    >>> adata = simulate(1_000, 1_000, n_proteins=24, random_state=0)
    >>> gbumap.tl.fit(adata, modality_key="feature_types", n_steps=50, verbose=False)
    >>> axes = gbumap.pl.modality_shares(adata, "ADT", groupby="cell_type", show=False)
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if groupby is not None:
        obs_column(adata, groupby)
    table = modality_contributions(adata, key, batch_size=batch_size)
    names = [c[len("share_"):] for c in table.columns if c.startswith("share_")]
    modality = names[-1] if modality is None else str(modality)
    if modality not in names:
        raise ValueError(f"modality must be one of {names}; got {modality!r}.")
    column = f"share of {modality}"
    shell = plot_shell(adata, key, obs=pd.DataFrame({column: table[f"share_{modality}"].to_numpy()},
                                                   index=adata.obs_names.copy()))
    n_panels = 1 if groupby is None else 2
    fig = plt.figure(figsize=(panel_size[0] * (1.2 if n_panels == 1 else 2.5), panel_size[1]))
    grid = fig.add_gridspec(1, n_panels, wspace=0.5)
    axes = [fig.add_subplot(grid[0, i]) for i in range(n_panels)]
    sc.pl.embedding(
        shell, basis=key, color=column, ax=axes[0], size=size, show=False, save=False, color_map="viridis",
        vmin=0, vmax=1, title=f"share of {modality} in each cell's position", **kwargs,
    )
    if groupby is not None:
        groups = adata.obs[groupby]
        means = table[[f"share_{n}" for n in names]].groupby(groups.to_numpy(), observed=True).mean()
        bars, left = axes[1], np.zeros(len(means))
        pos = np.arange(len(means))
        colors = plt.get_cmap("tab10")
        for m, name in enumerate(names):
            values = means[f"share_{name}"].to_numpy()
            bars.barh(pos, values, left=left, color=colors(m), label=name)
            left += values
        bars.set_yticks(pos, [str(g) for g in means.index], fontsize="small")
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.set_xlabel("mean share of the cell's position")
        bars.set_title(f"modality shares by {groupby}", fontsize="medium")
        bars.legend(frameon=False, fontsize="small", loc="lower right")
        bars.spines[["top", "right"]].set_visible(False)
    return finish(fig, axes, name="modality_shares", show=show, save=save, return_fig=return_fig)
