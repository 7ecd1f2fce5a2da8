"""Gene-set contributions as an AnnData of cells × sets, for scanpy's plots."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._results import find_result

__all__ = ["gene_set_scores"]


def _result(adata: AnnData, key: str) -> tuple[np.ndarray, Mapping]:
    run = "run gbumap.tl.gene_set_contributions(adata, gene_sets) first"
    result = find_result(adata, key, "gene_sets", hint=run)
    if key not in adata.obsm:
        raise KeyError(f"No gene-set contributions under obsm[{key!r}] beside uns[{key!r}]; {run}.")
    return np.asarray(adata.obsm[key]), result


def gene_set_scores(adata: AnnData, key: str = "gene_sets_gbumap", *, reduction: str | int | None = "l2") -> AnnData:
    """Gene-set contributions as a new AnnData of cells × sets, ready for scanpy's plots.

    Its ``X`` holds each set's per-cell contribution (see
    :func:`gbumap.tl.gene_set_contributions`), reduced over the map axes;
    ``obs`` and the two-dimensional ``obsm`` entries (the embedding) are
    copied from ``adata``, ``var`` is indexed by set name with ``size``,
    ``n_seen`` and ``genes``, and ``uns[key]`` holds a copy of the result
    (with its ranking when ``groupby`` was given), so
    ``sc.pl.rank_genes_groups_dotplot(scores, key=key)``,
    ``sc.pl.matrixplot(scores, sets, groupby)`` and
    ``sc.pl.embedding(scores, basis="gbumap", color=set_name)`` draw the sets.

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.gene_set_contributions` ran.
    key
        Its ``key_added`` (default ``"gene_sets_<model key>"``).
    reduction
        ``"l2"``: the length of the set's contribution over the map axes (how
        far the set moves the cell, whatever the direction); an axis index:
        the signed contribution along that axis; ``None``: ``X`` holds the
        length and ``layers["<model key><axis + 1>"]`` (e.g. ``"gbumap1"``)
        each axis's signed contribution. Sets may overlap, so a share of a
        per-cell total (``"normed_l2"``) is not offered.

    Returns
    -------
    AnnData
        ``n_cells × n_sets``, float32; ``adata`` is not modified.

    Examples
    --------
    >>> scores = gbumap.get.gene_set_scores(adata)  # doctest: +SKIP
    >>> sc.pl.matrixplot(scores, scores.var_names, "bulk_labels")  # doctest: +SKIP
    >>> sc.pl.embedding(scores, basis="gbumap", color="monocyte")  # doctest: +SKIP
    """
    values, result = _result(adata, key)
    n_axes = values.shape[1]
    if isinstance(reduction, (bool, np.bool_)) or not (
        reduction is None or reduction == "l2" or isinstance(reduction, (int, np.integer))
    ):
        raise ValueError(
            f"reduction must be 'l2', an axis index or None; got {reduction!r}. Gene sets may overlap, so "
            "shares of a per-cell total ('normed_l2') are not defined for them."
        )
    if isinstance(reduction, (int, np.integer)) and not 0 <= int(reduction) < n_axes:
        raise ValueError(f"Axis {reduction} does not exist; the embedding has {n_axes} axes (0 to {n_axes - 1}).")
    length = np.sqrt((values.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)
    X = length if reduction is None or reduction == "l2" else values[:, int(reduction), :].astype(np.float32)
    model_key = str(result["params"].get("model_key", "gbumap"))
    layers = {}
    if reduction is None:
        layers = {f"{model_key}{d + 1}": values[:, d, :].astype(np.float32) for d in range(n_axes)}
    table = result["sets"]
    var = pd.DataFrame(
        {c: np.asarray(table[c]) for c in table.columns}, index=pd.Index(np.asarray(table.index).astype(str))
    )
    obsm = {k: np.array(v) for k, v in adata.obsm.items() if isinstance(v, np.ndarray) and v.ndim == 2}
    uns = {key: copy.deepcopy(dict(result))}
    groupby = result["params"].get("groupby")
    if groupby is not None and f"{groupby}_colors" in adata.uns:
        uns[f"{groupby}_colors"] = np.array(adata.uns[f"{groupby}_colors"])
    return AnnData(X=X, obs=adata.obs.copy(), var=var, obsm=obsm, layers=layers, uns=uns)
