"""``gbumap.pl.interaction_modules``: module scores on the map and each module's top genes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import missing_key_error
from .._docs import SHOW_SAVE, doc_params, figure_returns
from .._results import KINDS, TAG, find_result
from ._utils import finish, panel_grid, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["interaction_modules"]


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the list of axes"))
def interaction_modules(
    adata: AnnData,
    modules: int | Sequence[int] = 3,
    *,
    view: str = "l2",
    key: str = "modules_gbumap",
    n_genes: int = 8,
    basis: str | None = None,
    size: float | None = None,
    panel_size: tuple[float, float] = (3.8, 3.4),
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | list | None:
    """Each module's scores on the map (top row) and its top genes' loadings (bottom row).

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.interaction_modules` ran.
    modules
        How many of the top modules to draw, or which ones (1-based).
    view
        ``"l2"`` (rotation-free scores ``sqrt(λ)|a|``) or ``"axis_1"``,
        ``"axis_2"``, … (signed terms ``λ a²`` on that axis).
    key
        The result's key.
    n_genes
        Genes per module, by absolute loading.
    basis
        ``obsm`` basis (default the model's embedding).
    size
        Point size.
    panel_size
        Width and height of one panel, in inches.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding`.

    {returns}

    Examples
    --------
    >>> gbumap.pl.interaction_modules(adata, 3, key="modules_bilinear")  # doctest: +SKIP
    """
    import scanpy as sc

    result = find_result(adata, key, "interaction_modules")
    views = [v for v in result if v not in KINDS["interaction_modules"].fields + (TAG,)]
    if view not in views:
        raise KeyError(f"View {view!r} not in uns[{key!r}]; it holds {views}.")
    loadings: pd.DataFrame = result[view]["loadings"]
    n_kept = loadings.shape[1]
    chosen = list(range(1, min(int(modules), n_kept) + 1)) if isinstance(modules, (int, np.integer)) else list(modules)
    bad = [m for m in chosen if not 1 <= int(m) <= n_kept]
    if bad or not chosen:
        raise ValueError(f"modules {bad or chosen} not among the {n_kept} stored modules (1 to {n_kept}).")
    scores_key = f"{key}_{view}"
    if scores_key not in adata.obsm:
        raise missing_key_error("obsm", scores_key, adata.obsm.keys())
    scores = np.asarray(adata.obsm[scores_key])
    basis = str(result["params"].get("model_key", "gbumap")) if basis is None else basis
    signed = view != "l2"

    fig, axes = panel_grid(2 * len(chosen), len(chosen), panel_size, hspace=0.45)
    values = np.asarray(result[view]["eigenvalues"])
    for j, module in enumerate(chosen):
        m = int(module) - 1
        name = f"module {module}"
        frame = pd.DataFrame({name: scores[:, m]}, index=adata.obs_names.copy())
        limit = float(np.abs(scores[:, m]).max()) or 1.0
        sc.pl.embedding(
            plot_shell(adata, basis, obs=frame),
            basis=basis,
            color=name,
            cmap="RdBu_r" if signed else None,
            vmin=-limit if signed else None,
            vmax=limit if signed else None,
            size=size,
            ax=axes[j],
            show=False,
            save=False,
            title=f"{name} ({view}), λ = {values[m]:.3g}\n" + ("term λa² on the axis" if signed else "score √λ·|a|"),
            **kwargs,
        )
        column = loadings.iloc[:, m]
        top = column.abs().nlargest(int(n_genes)).index[::-1]
        bars = axes[len(chosen) + j]
        colors = np.where(column.loc[top] > 0, "#b2182b", "#2166ac")
        bars.barh(np.arange(len(top)), column.loc[top].to_numpy(), color=colors)
        bars.set_yticks(np.arange(len(top)), labels=list(top), fontsize=8)
        bars.axvline(0, color="0.5", linewidth=0.8)
        bars.set_xlabel("gene loading (same sign: act together)", fontsize=8)
    return finish(fig, axes, name="interaction_modules", show=show, save=save, return_fig=return_fig)
