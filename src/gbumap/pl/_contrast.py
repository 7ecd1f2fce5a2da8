"""``gbumap.pl.contrast``: the shift between two groups on the map, built gene by gene."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import SHOW_SAVE, doc_params, figure_returns
from .._results import find_result, select_group
from .._validation import check_int
from ._utils import finish, group_colors, plot_shell

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["contrast"]


def contrast_path(result: Mapping, group: str, n_genes: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The top genes, their term vectors ``(n_genes, 2)`` and the remaining genes' summed term."""
    terms = np.column_stack([np.asarray(result["terms"][f"axis_{d + 1}"][group]) for d in range(2)])
    names = [str(n) for n in np.asarray(result["names"][group])[:n_genes]]
    return names, terms[:n_genes], terms[n_genes:].sum(axis=0)


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the axes"))
def contrast(
    adata: AnnData,
    group: str | None = None,
    *,
    key: str = "contrast_gbumap",
    n_genes: int = 6,
    basis: str | None = None,
    size: float | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | Axes | None:
    """The two groups of a contrast on the map, the shift between them, and the genes that build it.

    A black arrow joins the reference's mean position to the group's. From
    the reference's mean, the top ``n_genes`` genes' whole terms (from
    :func:`gbumap.tl.contrast`, in its rank order) are drawn head to tail,
    each labelled with its share of the shift (its whole term along the
    shift, divided by the shift's length), and a grey arrow adds the sum of
    all other genes' terms. The chain ends exactly at the group's mean
    position, because the terms of all genes sum to the shift. Drawn on the
    first two axes of the map.

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.contrast` ran.
    group
        The contrasted group (needed when the result holds several).
    key
        The contrast's ``uns`` key.
    n_genes
        Genes drawn one by one; the rest are summed into one arrow.
    basis
        ``obsm`` basis (default the contrast's model embedding).
    size
        Point size.
    ax
        Axes to draw into.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding`.

    {returns}

    Examples
    --------
    >>> gbumap.tl.contrast(adata, "bulk_labels", "CD14+ Monocyte", reference="CD19+ B")  # doctest: +SKIP
    >>> gbumap.pl.contrast(adata)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    result = find_result(adata, key, "contrast")
    group = select_group(result, key, group, "contrasts", "contrasted")
    if "terms" not in result:
        raise KeyError(f"uns[{key!r}] holds no per-axis terms (written by an older gbumap); rerun gbumap.tl.contrast.")
    n_genes = check_int(n_genes, "n_genes", 0)
    params = result["params"]
    groupby, reference = str(params["groupby"]), str(params["reference"])
    basis = str(params.get("model_key", "gbumap")) if basis is None else basis

    labels = adata.obs[groupby].astype(object).to_numpy()
    labelled = pd.notna(labels)
    in_group = labelled & (labels.astype(str) == group)
    in_reference = labelled & ~in_group if reference == "rest" else labelled & (labels.astype(str) == reference)
    role = np.where(in_group, group, np.where(in_reference, f"{reference} (reference)", "other"))
    palette = group_colors(adata, groupby)
    colors = {group: palette.get(group, "#d62728"), f"{reference} (reference)": palette.get(reference, "#1f77b4")}
    colors["other"] = "#e6e6e6"
    order = [c for c in (group, f"{reference} (reference)", "other") if c in set(role)]
    frame = pd.DataFrame({"role": pd.Categorical(role, categories=order)}, index=adata.obs_names.copy())
    shell = plot_shell(adata, basis, obs=frame, uns={"role_colors": [colors[c] for c in order]})
    emb = np.asarray(shell.obsm[f"X_{basis}"], dtype=np.float64)[:, :2]

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 5.0))
    else:
        fig = ax.figure
    sc.pl.embedding(shell, basis=basis, color="role", size=size, ax=ax, show=False, save=False, title="", **kwargs)

    start = emb[in_reference].mean(axis=0)
    end = emb[in_group].mean(axis=0)
    names, vectors, rest = contrast_path(result, group, int(n_genes))
    arrow = dict(angles="xy", scale_units="xy", scale=1.0, zorder=4)
    ax.quiver(*start, *(end - start), color="black", alpha=0.5, width=0.008, **arrow)
    cmap = plt.get_cmap("tab10")
    handles = []
    tip = start.copy()
    # the arrows are the genes' whole terms, so their shares are of the whole term along the shift
    length = float(np.linalg.norm(end - start))
    whole = sum(np.asarray(result[f][group]) for f in ("difference_term", "context_term", "covariance_term"))
    shares = whole / length
    for j, (name, vec) in enumerate(zip(names, vectors)):
        handles.append(
            ax.quiver(*tip, *vec, color=cmap(j % 10), width=0.005, label=f"{j + 1}. {name} ({shares[j]:.1%})", **arrow)
        )
        ax.annotate(str(j + 1), tip + vec, color=cmap(j % 10), fontsize=8, xytext=(2, 2), textcoords="offset points")
        tip = tip + vec
    handles.append(ax.quiver(*tip, *rest, color="0.35", width=0.003, label="all other genes", **arrow))
    from matplotlib.legend import Legend

    # a second legend beside scanpy's legend of the groups (ax.legend would replace it)
    genes_legend = Legend(
        ax,
        handles,
        [h.get_label() for h in handles],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        ncols=3,
        fontsize=8,
        frameon=False,
        title="genes head to tail from the reference's mean (share of the shift)",
        title_fontsize=8,
    )
    ax.add_artist(genes_legend)
    genes_legend.set_clip_on(False)  # drawn below the axes; add_artist clips to them
    share = float(shares[: len(names)].sum())
    ax.set_title(
        f"{group} vs {reference}: |shift| = {np.linalg.norm(end - start):.2f}\n"
        f"black: the shift of the mean position; top {len(names)} genes: {share:.0%} of it",
        fontsize=9,
    )
    return finish(fig, ax, name="contrast", show=show, save=save, return_fig=return_fig)
