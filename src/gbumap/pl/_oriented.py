"""``gbumap.pl.oriented_contributions``: the map coloured by rotation-free contributions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anndata import AnnData

from .._docs import SHOW_SAVE, doc_params, figure_returns
from ..get._oriented import Frame
from ..get._oriented import oriented_contributions as _oriented_values
from ._contribution import gene_panels
from ._utils import finish

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["oriented_contributions"]

_LABELS = {
    "radial": "radial (+: out from group centre)",
    "tangential": "tangential (across the offset)",
    "contrast": "along the contrast shift",
}


@doc_params(show_save=SHOW_SAVE, returns=figure_returns("the list of axes"))
def oriented_contributions(  # noqa: PLR0913 (scanpy-style plot options, keyword-only)
    adata: AnnData,
    genes: str | Sequence[str],
    *,
    frame: Frame = "radial",
    groupby: str | None = None,
    group: str | None = None,
    contrast_key: str | None = None,
    key: str = "gbumap",
    basis: str | None = None,
    shared_scale: bool = False,
    cmap: str | None = None,
    size: float | None = None,
    ncols: int = 4,
    panel_size: tuple[float, float] = (4.0, 3.6),
    batch_size: int = 4096,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    return_fig: bool | None = None,
    **kwargs: Any,
) -> Figure | list[Axes] | None:
    """Embedding coloured by genes' contributions in a frame that turns with the map.

    The values of :func:`gbumap.get.oriented_contributions`: ``"radial"``
    (each cell's push away from its group's centre, signed), ``"tangential"``
    (the length across that direction) or ``"contrast"`` (the push along a
    :func:`gbumap.tl.contrast` shift, signed). Unlike a per-axis
    contribution, the picture is the same for a rotated or mirrored map.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    genes
        One gene or several.
    frame, groupby, group, contrast_key
        As in :func:`gbumap.get.oriented_contributions`.
    key
        The model key.
    basis
        ``obsm`` basis to draw on (default ``obsm["X_<key>"]``).
    shared_scale
        One colour scale for all panels.
    cmap
        Colormap (default ``"RdBu_r"``, centred at 0, for the signed frames;
        scanpy's for ``"tangential"``).
    size
        Point size.
    ncols
        Panels per row.
    panel_size
        Width and height of one panel, in inches.
    batch_size
        Cells per batch of contributions.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` for every panel.

    {returns}

    Examples
    --------
    >>> gbumap.pl.oriented_contributions(adata, ["LYZ", "CD74"], groupby="bulk_labels")  # doctest: +SKIP
    """
    values = _oriented_values(
        adata,
        genes,
        frame=frame,
        groupby=groupby,
        group=group,
        contrast_key=contrast_key,
        key=key,
        batch_size=batch_size,
    )
    fig, axes = gene_panels(
        adata,
        values.to_numpy(),
        list(values.columns),
        signed=frame != "tangential",
        label=_LABELS[frame],
        basis=key if basis is None else basis,
        shared_scale=shared_scale,
        cmap=cmap,
        size=size,
        ncols=ncols,
        panel_size=panel_size,
        **kwargs,
    )
    return finish(fig, axes, name=f"oriented_{frame}", show=show, save=save, return_fig=return_fig)
