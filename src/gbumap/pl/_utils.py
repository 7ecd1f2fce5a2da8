"""Shared plumbing for the plotting functions: components, batches, show/save."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import missing_key_error, select_obs
from .._attribution import reduction_label
from ..get._model import ModelView, model_view

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Component = Union[Literal["l2", "normed_l2"], int]

__all__ = ["Component"]


def check_component(component: Component, n_axes: int) -> Component:
    """Validate a ``component`` argument against the number of embedding axes."""
    if isinstance(component, (bool, np.bool_)):
        raise ValueError(f"component must be 'l2', 'normed_l2' or an axis index; got {component!r}.")
    if isinstance(component, (int, np.integer)):
        if not 0 <= int(component) < n_axes:
            raise ValueError(f"Axis {component} does not exist; the embedding has {n_axes} axes (0 to {n_axes - 1}).")
        return int(component)
    if component not in ("l2", "normed_l2"):
        raise ValueError(f"component must be 'l2', 'normed_l2' or an axis index; got {component!r}.")
    return component


def is_signed(component: Component) -> bool:
    return not isinstance(component, str)


def component_label(component: Component, key: str = "gbumap") -> str:
    """Human-readable name of a component, for titles and axis labels."""
    return reduction_label(component, key)


def embedding_key(adata: AnnData, basis: str) -> str:
    """The ``obsm`` key of a basis given scanpy-style (``"gbumap"`` or ``"X_gbumap"``)."""
    for candidate in (f"X_{basis}", basis):
        if candidate in adata.obsm:
            return candidate
    raise missing_key_error("obsm", f"X_{basis}", adata.obsm.keys())


def feature_indices(view: ModelView, genes: str | Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``genes`` among the model's features (all when ``None``) and their names."""
    names = view.feature_names
    if genes is None:
        return np.arange(len(names)), names
    wanted = np.asarray([genes] if isinstance(genes, str) else list(genes)).astype(str)
    idx = pd.Index(names).get_indexer(wanted)
    if (idx < 0).any():
        missing = wanted[idx < 0]
        raise KeyError(
            f"Not among the {len(names)} features of the model: {', '.join(missing[:20])}. "
            "Only genes the model was trained on have contributions."
        )
    return idx, names[idx]


def iter_component(
    adata: AnnData,
    view: ModelView,
    obs_idx: np.ndarray,
    component: Component,
    feature_idx: np.ndarray | None = None,
    batch_size: int = 4096,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, values)`` with ``values`` of shape ``(len(rows), n_features_wanted)`` in float64.

    ``"normed_l2"`` is always the share of the cell's total over *all* the
    model's features, also when only some features are wanted.
    """
    if component == "normed_l2" and feature_idx is not None:
        for rows, contrib in view.iter_contributions(adata, obs_idx, batch_size=batch_size):
            mag = np.sqrt((contrib.astype(np.float64) ** 2).sum(axis=1))
            total = mag.sum(axis=1, keepdims=True)
            total[total == 0] = 1.0
            yield rows, mag[:, feature_idx] / total
        return
    for rows, contrib in view.iter_contributions(adata, obs_idx, feature_idx, batch_size=batch_size):
        contrib = contrib.astype(np.float64)
        if component == "l2":
            yield rows, np.sqrt((contrib**2).sum(axis=1))
        elif component == "normed_l2":
            mag = np.sqrt((contrib**2).sum(axis=1))
            total = mag.sum(axis=1, keepdims=True)
            total[total == 0] = 1.0
            yield rows, mag / total
        else:
            yield rows, contrib[:, int(component), :]


def component_values(
    adata: AnnData,
    view: ModelView,
    component: Component,
    feature_idx: np.ndarray | None = None,
    obs_idx: np.ndarray | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Per-cell values of ``component`` for some features, ``(n_cells, n_features)``."""
    obs_idx = np.arange(adata.n_obs) if obs_idx is None else obs_idx
    n_feat = len(view.feature_names) if feature_idx is None else len(feature_idx)
    out = np.empty((len(obs_idx), n_feat))
    pos = 0
    for rows, values in iter_component(adata, view, obs_idx, component, feature_idx, batch_size):
        out[pos : pos + len(rows)] = values
        pos += len(rows)
    return out


def selection(
    adata: AnnData,
    obs=None,
    groupby: str | None = None,
    group: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, str]:
    """Integer rows of a cell selection and a short description of it."""
    if (groupby is None) != (group is None):
        raise ValueError("Pass groupby and group together (e.g. groupby='bulk_labels', group='CD14+ Monocyte').")
    rows = select_obs(adata, obs)
    parts = [] if obs is None else ["selected cells"]
    if groupby is not None:
        if groupby not in adata.obs.columns:
            raise missing_key_error("obs column", groupby, adata.obs.columns)
        wanted = [group] if isinstance(group, str) else [str(g) for g in group]
        labels = adata.obs[groupby].astype(str)
        present = set(labels.unique())
        unknown = [g for g in wanted if g not in present]
        if unknown:
            raise KeyError(f"Groups {unknown} not in obs[{groupby!r}]; it has {sorted(present)}.")
        in_group = np.flatnonzero(labels.isin(wanted).to_numpy())
        rows = np.intersect1d(rows, in_group) if obs is not None else in_group
        parts.append(f"{groupby} = {', '.join(wanted)}")
    if len(rows) == 0:
        raise ValueError("The selection contains no cells.")
    return rows, " & ".join(parts) if parts else "all cells"


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
