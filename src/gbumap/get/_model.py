"""Reading a fitted model and its inputs back from an AnnData."""

from __future__ import annotations

from anndata import AnnData

from .._registry import read_record

__all__ = ["model"]


def model(adata: AnnData, key: str = "gbumap", *, encoder=None):
    """Rebuild the fitted :class:`~gbumap.GlassBoxUMAP` stored in ``adata.uns[key]``.

    Nothing is unpickled: weights are read from plain numeric arrays and
    validated before use.

    Parameters
    ----------
    adata
        AnnData holding the model registry.
    key
        The model key used at fit time (``key_added``).
    encoder
        Only for models trained with a custom encoder: an instance of the
        same architecture to load the stored weights into.

    Returns
    -------
    A fitted :class:`~gbumap.GlassBoxUMAP` (on the CPU).

    Examples
    --------
    >>> import gbumap
    >>> est = gbumap.get.model(adata)  # doctest: +SKIP
    >>> est.transform(new_cells)  # doctest: +SKIP
    """
    return read_record(adata, key, encoder=encoder).model
