"""``gbumap.pl.perturbation``: the map with the displacement arrows of an in-silico perturbation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import SHOW_SAVE, doc_params, figure_returns
from .._results import find_result
from .._validation import check_int, check_number, obs_column
from ._utils import finish, group_colors, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["perturbation"]


def _result(adata: AnnData, key: str, first_order: bool) -> tuple[Mapping, np.ndarray]:
    field = f"{key}_first_order" if first_order else key
    run = f"run gbumap.tl.perturb(adata, genes, key_added={key!r}) first"
    result = find_result(adata, key, "perturb", hint=run)
    if field not in adata.obsm:
        raise KeyError(f"No perturbation under obsm[{field!r}] beside uns[{key!r}]; {run}.")
    return result, np.asarray(adata.obsm[field], dtype=np.float64)


def _arrow_colors(adata: AnnData, color: str, picked: np.ndarray) -> tuple[list[str], dict[str, str]]:
    """One colour per arrow from the group's palette (``uns[f"{color}_colors"]``, else scanpy's default)."""
    import scanpy as sc

    labels = obs_column(adata, color)
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
            raise ValueError(f"color must be a categorical obs column (groups); obs[{color!r}] is numeric.")
        labels = labels.astype("category")
    palette = group_colors(adata, color)
    if not palette:
        cats = [str(c) for c in labels.cat.categories]
        default = sc.pl.palettes.default_20 if len(cats) <= 20 else sc.pl.palettes.default_102
        palette = dict(zip(cats, default))
    names = labels.astype(object).to_numpy()[picked]
    colors = ["lightgrey" if pd.isna(n) else palette.get(str(n), "black") for n in names]
    shown = {str(n): palette.get(str(n), "black") for n in pd.unique(names[pd.notna(names)])}
    order = [str(c) for c in labels.cat.categories if str(c) in shown]
    return colors, {c: shown[c] for c in order}


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the axes"))
def perturbation(
    adata: AnnData,
    key: str = "perturb_gbumap",
    *,
    basis: str | None = None,
    color: str | None = None,
    n_arrows: int = 300,
    scale: float = 1.0,
    first_order: bool = False,
    random_state: int | None = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | Axes | None:
    """The map in grey with arrows showing where a perturbation moves the cells.

    Draws the result of :func:`gbumap.tl.perturb`: each arrow starts at a
    cell's position and ends at its position after the perturbation, on a
    seeded random subsample of the cells that moved (cells not perturbed or
    left unchanged by the edit get no arrow). An arrow's length is the cell's
    displacement in map units times ``scale``.

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.perturb` ran.
    key
        The perturbation's key (``key_added`` of :func:`gbumap.tl.perturb`).
    basis
        ``obsm`` basis to draw on (default: the perturbed model's own
        embedding, ``obsm["X_<model key>"]``). The displacements are in that
        model's map units, so another basis only makes sense if it is the
        same map.
    color
        Categorical ``obs`` column colouring the arrows, with the palette in
        ``uns[f"{color}_colors"]`` (scanpy's default palette when absent);
        default the perturbation's ``groupby``, if it had one, else black.
    n_arrows
        At most this many arrows.
    scale
        Arrow length = displacement × ``scale`` (``quiver(angles="xy",
        scale_units="xy", scale=1/scale)``): 1 draws the true move.
    first_order
        Draw the first-order prediction ``J(u)·(u' − u)`` instead of the
        exact displacement.
    random_state
        Seed of the subsample.
    ax
        Draw into this matplotlib axes.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` for the grey background.

    {returns}

    Examples
    --------
    >>> gbumap.tl.perturb(adata, ["LYZ", "S100A8"], groupby="bulk_labels")  # doctest: +SKIP
    >>> gbumap.pl.perturbation(adata, scale=2)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    result, disp = _result(adata, key, first_order)
    n_arrows = check_int(n_arrows, "n_arrows")
    check_number(scale, "scale", 0, strict=True)
    params = result["params"]
    basis = str(params["model_key"]) if basis is None else basis
    groupby = str(params.get("groupby", "None"))
    color = (None if groupby == "None" else groupby) if color is None else color

    length = np.linalg.norm(disp, axis=1)
    moved = np.flatnonzero(np.isfinite(length) & (length > 0))
    rng = np.random.default_rng(random_state)
    picked = np.sort(rng.choice(moved, size=min(int(n_arrows), len(moved)), replace=False))
    colors, legend = _arrow_colors(adata, color, picked) if color is not None else ("black", {})

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
    else:
        fig = ax.figure
    title = str(params.get("description", key)) + ("\nfirst-order prediction" if first_order else "")
    shell = plot_shell(adata, basis)
    kwargs.setdefault("title", title)
    sc.pl.embedding(shell, basis=basis, ax=ax, show=False, save=False, **kwargs)
    emb = np.asarray(shell.obsm[f"X_{basis}"])[:, :2]
    if len(picked):
        _arrows(ax, emb[picked], disp[picked], colors, scale)
    if legend:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=c, marker=">", linestyle="-", label=name) for name, c in legend.items()]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small")
    return finish(fig, ax, name="perturbation", show=show, save=save, return_fig=return_fig)


def _arrows(ax: Axes, start: np.ndarray, move: np.ndarray, colors, scale: float) -> None:
    """Arrows from ``start`` along ``move``, drawn ``scale`` times their length in data units."""
    ax.quiver(
        start[:, 0],
        start[:, 1],
        move[:, 0],
        move[:, 1],
        color=colors,
        angles="xy",
        scale_units="xy",
        scale=1.0 / float(scale),
        width=0.004,
        zorder=3,
    )
