"""Shared plumbing for the plotting functions: components, batches, show/save."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import missing_key_error
from .._attribution import Reduction, check_reduction
from .._view import ModelView, model_view

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

def resolve_reduction(reduction: Reduction, component: Reduction | None, n_axes: int, caller: str) -> Reduction:
    """The ``reduction`` to use, honouring the deprecated ``component=`` (same values) with a warning."""
    if component is not None:
        warnings.warn(
            f"gbumap.pl.{caller}(component=...) is deprecated and will be removed in the next release; "
            "use reduction= (same values: 'l2', 'normed_l2' or an axis index).",
            FutureWarning,
            stacklevel=3,
        )
        reduction = component
    return check_reduction(reduction, n_axes)


def is_signed(reduction: Reduction) -> bool:
    return not isinstance(reduction, str)


def embedding_key(adata: AnnData, basis: str) -> str:
    """The ``obsm`` key of a basis given scanpy-style (``"gbumap"`` or ``"X_gbumap"``)."""
    for candidate in (f"X_{basis}", basis):
        if candidate in adata.obsm:
            return candidate
    raise missing_key_error("obsm", f"X_{basis}", adata.obsm.keys())


def feature_indices(view: ModelView, genes: str | Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``genes`` among the model's features (all when ``None``) and their names."""
    idx = view.feature_indices(genes)
    if idx is None:
        idx = np.arange(len(view.feature_names))
    return idx, view.feature_names[idx]


def reduced_values(
    adata: AnnData,
    view: ModelView,
    reduction: Reduction,
    feature_idx: np.ndarray | None = None,
    obs_idx: np.ndarray | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Per-cell values of ``reduction`` for some features, ``(n_cells, n_features)`` in float64."""
    obs_idx = np.arange(adata.n_obs) if obs_idx is None else obs_idx
    n_feat = len(view.feature_names) if feature_idx is None else len(feature_idx)
    out = np.empty((len(obs_idx), n_feat))
    pos = 0
    for rows, values in view.iter_reduced(adata, obs_idx, reduction, feature_idx, batch_size):
        out[pos : pos + len(rows)] = values
        pos += len(rows)
    return out


def group_colors(adata: AnnData, groupby: str) -> dict[str, str]:
    """``{category: colour}`` from ``uns[f"{groupby}_colors"]`` (empty when absent or mismatched)."""
    labels = adata.obs[groupby]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        return {}
    cats = [str(c) for c in labels.cat.categories]
    colors = adata.uns.get(f"{groupby}_colors")
    if colors is None or len(colors) < len(cats):
        return {}
    return dict(zip(cats, (str(c) for c in colors)))


def plot_shell(
    adata: AnnData,
    basis: str,
    extra_obsm: dict[str, np.ndarray] | None = None,
    obs: pd.DataFrame | None = None,
    uns: dict | None = None,
) -> AnnData:
    """A light AnnData with only an embedding and some ``obs`` columns, for scanpy to draw.

    Plotting never writes into the user's object: colours, categoricals and
    palettes scanpy sets go into this throw-away object instead.
    """
    emb_key = embedding_key(adata, basis)
    obsm = {f"X_{basis}": np.asarray(adata.obsm[emb_key])}
    obsm.update(extra_obsm or {})
    frame = pd.DataFrame(index=adata.obs_names.copy()) if obs is None else obs
    shell = AnnData(obs=frame, obsm=obsm)
    for k, v in (uns or {}).items():
        shell.uns[k] = v
    return shell


def color_columns(adata: AnnData, color: str | Sequence[str] | None) -> tuple[pd.DataFrame, dict]:
    """``obs`` columns or genes to colour by, with their palettes, for a plot shell."""
    frame = pd.DataFrame(index=adata.obs_names.copy())
    uns: dict = {}
    if color is None:
        return frame, uns
    import scanpy as sc

    keys = [color] if isinstance(color, str) else list(color)
    values = sc.get.obs_df(adata, keys=keys)
    for k in keys:
        frame[k] = values[k]
        if f"{k}_colors" in adata.uns:
            uns[f"{k}_colors"] = list(adata.uns[f"{k}_colors"])
    return frame, uns


def resolve_show(show: bool | None) -> bool:
    """``show=None`` follows matplotlib's interactive mode."""
    if show is not None:
        return bool(show)
    import matplotlib

    return bool(matplotlib.is_interactive())


def finish(
    fig: Figure,
    axes: Axes | list[Axes],
    *,
    name: str,
    show: bool | None,
    save: str | Path | bool | None,
    return_fig: bool | None,
):
    """Save and/or show a figure and pick the return value like scanpy does.

    ``save`` may be a path (written with ``fig.savefig``) or ``True`` (written
    to ``sc.settings.figdir`` as ``gbumap_<name>.<sc.settings.file_format_figs>``).
    """
    import matplotlib.pyplot as plt

    if save:
        if save is True:
            import scanpy as sc

            target = Path(sc.settings.figdir) / f"gbumap_{name}.{sc.settings.file_format_figs}"
        else:
            target = Path(save)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, bbox_inches="tight")
    if return_fig:
        return fig
    if resolve_show(show):
        plt.show()
        return None
    return axes


def panel_grid(n_panels: int, ncols: int, panel_size: tuple[float, float], hspace: float = 0.35, wspace: float = 0.4):
    """A figure with ``n_panels`` axes on a grid of ``ncols`` columns (unused cells removed)."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(int(ncols), n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, grid = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        squeeze=False,
        gridspec_kw={"hspace": hspace, "wspace": wspace},
    )
    axes = list(grid.ravel())
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    return fig, axes[:n_panels]


def model(adata: AnnData, key: str) -> ModelView:
    return model_view(adata, key)
