"""Reading :func:`gbumap.tl.quality` results back as a table."""

from __future__ import annotations

import pandas as pd
from anndata import AnnData

from .._results import find_result

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
    result = find_result(adata, key, "quality", hint="run gbumap.tl.quality(adata, ...) first")
    bases = [str(b) for b in result["params"]["basis"]]
    return pd.DataFrame({b: dict(result[b]) for b in bases}).T.rename_axis("basis")
