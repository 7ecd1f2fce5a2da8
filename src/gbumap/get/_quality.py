"""Reading :func:`gbumap.tl.quality` results back as a table."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from anndata import AnnData

__all__ = ["quality"]


def quality(adata: AnnData, key: str = "gbumap_quality") -> pd.DataFrame:
    """The layout-quality figures of :func:`gbumap.tl.quality`, one row per embedding.

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.quality` ran.
    key
        Its ``key_added``.

    Returns
    -------
    DataFrame indexed by the embedding's ``obsm`` key, one column per figure.

    Examples
    --------
    >>> gbumap.get.quality(adata)[["knn_preservation", "radial_anisotropy"]]  # doctest: +SKIP
    """
    if key not in adata.uns:
        found = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and "params" in v and "basis" in v["params"]]
        shown = ", ".join(repr(k) for k in found) or "none"
        raise KeyError(
            f"No gbumap.tl.quality result under uns[{key!r}]; run gbumap.tl.quality(adata, ...) first. "
            f"Quality results in this AnnData: {shown}."
        )
    result = adata.uns[key]
    bases = [str(b) for b in result["params"]["basis"]]
    return pd.DataFrame({b: dict(result[b]) for b in bases}).T.rename_axis("basis")
