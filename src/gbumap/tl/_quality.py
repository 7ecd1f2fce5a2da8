"""``gbumap.tl.quality``: layout-quality figures for any embeddings of an AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _layout_metrics as metrics
from .._anndata_input import missing_key_error, x_matrix
from .._dask import is_dask_array
from .._results import Result, result_key, write_result
from .._validation import check_finite, check_int, obs_column

__all__ = ["quality"]

_PCA_COMPONENTS = 50


def _embedding(adata: AnnData, basis: str) -> tuple[str, np.ndarray]:
    """``obsm`` key and array for a basis given as ``"umap"`` or ``"X_umap"``."""
    for key in (basis, f"X_{basis}"):
        if key in adata.obsm:
            emb = np.asarray(adata.obsm[key], dtype=np.float64)
            if emb.ndim != 2:
                raise ValueError(f"obsm[{key!r}] must be 2-D; got shape {emb.shape}.")
            check_finite(emb, name=f"obsm[{key!r}]")
            return key, emb
    raise missing_key_error("obsm (basis)", basis, adata.obsm.keys())


def _input_representation(adata: AnnData, use_rep: str | None, random_state: int) -> tuple[str, np.ndarray]:
    """The representation whose neighbours the embeddings should keep."""
    X = x_matrix(adata)  # a backed file's X as a Dask array over the file, as tl.fit reads it
    lazy = is_dask_array(X)
    if use_rep is not None:
        if use_rep == "X":
            if lazy and X.shape[1] > _PCA_COMPONENTS:
                raise ValueError(
                    f"use_rep='X' would load the lazy X ({X.shape[0]} cells × {X.shape[1]} features) into memory "
                    "whole. Leave use_rep=None (the neighbours are then compared in a PCA computed chunk by chunk) "
                    "or pass an obsm representation such as 'X_pca'."
                )
            return "X", _dense_rows(X)
        if use_rep not in adata.obsm:
            raise missing_key_error("obsm (use_rep)", use_rep, adata.obsm.keys())
        rep = np.asarray(adata.obsm[use_rep], dtype=np.float32)
        check_finite(rep, name=f"obsm[{use_rep!r}]")
        return use_rep, rep
    if "X_pca" in adata.obsm:
        return "X_pca", np.asarray(adata.obsm["X_pca"], dtype=np.float32)
    if X is None:
        raise ValueError("adata has no X and no obsm['X_pca']; pass use_rep= with the input representation.")
    import scanpy as sc

    if not lazy:
        check_finite(X, name="X")
    n_comps = min(_PCA_COMPONENTS, adata.n_obs - 1, adata.n_vars - 1)
    if adata.n_vars <= _PCA_COMPONENTS:
        return "X", _dense_rows(X)
    if lazy:
        pcs = _chunked_pcs(X, n_comps, random_state)
        return f"PCA of X ({n_comps} components, chunk by chunk, not stored)", pcs
    pcs = sc.pp.pca(X, n_comps=n_comps, random_state=random_state)
    return f"PCA of X ({n_comps} components, not stored)", np.asarray(pcs, dtype=np.float32)


def _dense_rows(X) -> np.ndarray:
    """``X`` as a dense float32 array (a lazy ``X`` computed chunk by chunk, each chunk densified alone)."""
    if is_dask_array(X):
        X = X.map_blocks(lambda b: np.asarray(b.toarray() if sp.issparse(b) else b, dtype=np.float32),
                         dtype=np.float32, meta=np.empty((0, 0), dtype=np.float32)).compute()
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def _chunked_pcs(X, n_comps: int, random_state: int) -> np.ndarray:
    """Cells × ``n_comps`` principal components of a lazy ``X``, from passes over its row chunks (never whole)."""
    from .._dask import column_stats, row_chunk_products
    from .._pca import randomized_pca

    mean = column_stats(X, name="X")  # raises for NaN or infinite values
    components, _ = randomized_pca(X, n_comps, center=mean, random_state=random_state)
    times, _ = row_chunk_products(X)
    pcs = times(components.T)
    pcs -= mean @ components.T
    return pcs.astype(np.float32)


def _obs_values(adata: AnnData, key: str, kind: str) -> np.ndarray:
    return obs_column(adata, key, what=f"obs column ({kind})").to_numpy()


def quality(
    adata: AnnData,
    basis: str | Sequence[str] = ("gbumap", "umap"),
    *,
    use_rep: str | None = None,
    groupby: str | None = None,
    continuous: str | Sequence[str] | None = None,
    time_key: str | None = None,
    branch_key: str | None = None,
    batch_key: str | None = None,
    integration_metrics: bool | None = None,
    n_neighbors: int = 15,
    n_cells: int = 10_000,
    random_state: int = 0,
    key_added: str = "gbumap_quality",
    copy: bool = False,
) -> AnnData | None:
    """Measure how well embeddings keep their input's structure, side by side.

    Each embedding in ``basis`` (e.g. gbumap's and ``sc.tl.umap``'s) is scored
    on the same cells against the same input representation, so one call
    compares them. Read the table back with :func:`gbumap.get.quality`.

    Figures (``k = n_neighbors``):

    ``knn_preservation``
        Mean share of each cell's ``k`` nearest neighbours in the input that
        are also among its ``k`` nearest in the embedding (exact search among
        all cells, for up to ``n_cells`` sampled cells).
    ``trustworthiness``
        Trustworthiness@k (Venna & Kaski; scikit-learn), on up to 5,000 of
        the sampled cells (its cost is quadratic).
    ``label_accuracy``
        With ``groupby``: 5-fold cross-validated accuracy of a ``k``-nearest-
        neighbour classifier of the labels from the embedding.
    ``radial_anisotropy``
        With ``groupby``: per group, ``sqrt(var along / var across)`` where
        "along" is the direction from the map's centre (the mean of all
        cells) to the group's centroid and "across" the mean variance
        perpendicular to it; the median over groups of at least 10 cells.
        Near 1 without a preferred direction, well above 1 for a starburst
        of streaks pointing at the centre.
    ``centroid_distance_spearman``
        With ``groupby``: Spearman correlation between the groups' pairwise
        centroid distances in the input and in the embedding.
    ``r2_<column>``
        For each ``continuous`` column: within each group (all cells at once
        without ``groupby``), the R² of a linear fit of the column from the
        embedding coordinates; the median over groups. NaN values are left out.
    ``trajectory_spearman``, ``trajectory_r2``
        With ``time_key`` and ``branch_key``: per branch, the Spearman
        correlation between the time and the distance from the root (the
        centroid of the earliest 10% of cells), and the R² of a linear fit of
        the time from the coordinates; medians over branches. Cells with NaN
        time are left out.
    ``batch_mixing``
        With ``batch_key``: the mean share of each sampled cell's 30 nearest
        map neighbours that come from other batches, over that share under
        random mixing (``(n − n_b)/(n − 1)`` for a cell of batch ``b``): 0 when
        the batches lie apart, about 1 when they are mixed as at random.
    ``ilisi``, ``batch_asw``, ``graph_connectivity``, ``clisi``, ``label_asw``, ``nmi``, ``ari``
        With ``batch_key`` and ``integration_metrics``: the field's integration
        benchmarks as ``scib-metrics`` computes them (on the sampled cells;
        all but iLISI need ``groupby``). Higher is better for each.

    Parameters
    ----------
    adata
        AnnData holding the embeddings in ``obsm``.
    basis
        Embeddings to score, as ``"gbumap"`` or ``"X_gbumap"``.
    use_rep
        Input representation (``obsm`` key, or ``"X"``). Default:
        ``obsm["X_pca"]`` when present, else a 50-component PCA of ``X``
        computed here and not stored (for a lazy Dask ``X``, gbumap's
        randomised PCA over its row chunks, so ``X`` is never loaded whole;
        ``"X"`` itself is then refused above 50 features).
    groupby
        Categorical ``obs`` column of cell labels.
    continuous
        Numeric ``obs`` columns of known continuous variables (a state, a
        pseudotime).
    time_key, branch_key
        ``obs`` columns of a differentiation time and the branch (fate) of
        each trajectory cell.
    batch_key
        ``obs`` column of batch labels: adds the batch-mixing figures.
    integration_metrics
        Also compute scib-metrics' figures (needs ``pip install
        'gbumap[integration]'``). ``None``: when scib-metrics is installed.
    n_neighbors
        ``k`` of the neighbour-based figures.
    n_cells
        Cells sampled for the neighbour-based figures.
    random_state
        Seed of the cell sample (and of the PCA when one is computed).
    key_added
        ``uns`` key of the result.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the new AnnData, with ``uns[key_added]`` holding ``params``
    and, per embedding key, a mapping of figure name to value; also
    ``per_group_anisotropy`` per embedding.

    Examples
    --------
    >>> gbumap.tl.quality(adata, ["gbumap", "umap"], groupby="bulk_labels")  # doctest: +SKIP
    >>> gbumap.get.quality(adata)  # doctest: +SKIP
    """
    if isinstance(basis, str):
        basis = [basis]
    if len(basis) == 0:
        raise ValueError("basis is empty; name at least one embedding, e.g. basis='gbumap'.")
    n_neighbors = check_int(n_neighbors, "n_neighbors")
    if adata.n_obs <= n_neighbors + 1:
        raise ValueError(
            f"Too few cells: {adata.n_obs} cells for n_neighbors={n_neighbors}; lower n_neighbors or add cells."
        )
    if (time_key is None) != (branch_key is None):
        raise ValueError("Pass time_key and branch_key together (the time and the branch of trajectory cells).")
    embeddings = dict(_embedding(adata, b) for b in basis)
    for key, emb in embeddings.items():
        if emb.shape[0] != adata.n_obs:
            raise ValueError(f"obsm[{key!r}] has {emb.shape[0]} rows for {adata.n_obs} cells.")
    labels = _obs_values(adata, groupby, "groupby").astype(str) if groupby is not None else None
    if labels is not None:
        labels = np.where(adata.obs[groupby].isna().to_numpy(), None, labels).astype(object)
    if continuous is None:
        continuous = []
    elif isinstance(continuous, str):
        continuous = [continuous]
    values = {c: np.asarray(_obs_values(adata, c, "continuous"), dtype=np.float64) for c in continuous}
    if time_key is not None:
        time = np.asarray(_obs_values(adata, time_key, "time_key"), dtype=np.float64)
        branch = _obs_values(adata, branch_key, "branch_key")
        branch = np.where(adata.obs[branch_key].isna().to_numpy(), None, branch.astype(str)).astype(object)
    batches = None
    if batch_key is not None:
        from .._anndata_input import obs_batches

        batches = obs_batches(adata, batch_key)
        if integration_metrics is None:
            import importlib.util

            integration_metrics = importlib.util.find_spec("scib_metrics") is not None
    key_added = result_key(adata, "quality", key_added)
    rep_name, rep = _input_representation(adata, use_rep, random_state)

    rng = np.random.default_rng(random_state)
    sample = np.sort(rng.choice(adata.n_obs, size=min(int(n_cells), adata.n_obs), replace=False))
    trust_sample = np.sort(rng.choice(sample, size=min(5000, len(sample)), replace=False))
    k = int(n_neighbors)
    result: dict = {
        "params": {
            "basis": [str(b) for b in embeddings],
            "use_rep": rep_name,
            "groupby": str(groupby),
            "n_neighbors": k,
            "n_cells": len(sample),
            "random_state": int(random_state),
            "batch_key": str(batch_key),
        }
    }
    for key, emb in embeddings.items():
        figures = {
            "knn_preservation": metrics.knn_preservation(rep, emb, sample, k),
            "trustworthiness": metrics.trustworthiness(rep, emb, trust_sample, k),
        }
        if labels is not None:
            figures["label_accuracy"] = metrics.label_accuracy(emb, labels, sample[labels[sample] != None], k)  # noqa: E711
            median, per_group = metrics.radial_anisotropy(emb, labels)
            figures["radial_anisotropy"] = median
            figures["centroid_distance_spearman"] = metrics.centroid_distance_correlation(rep, emb, labels)
            result.setdefault("per_group_anisotropy", {})[key] = pd.Series(per_group, dtype=np.float64)
        for column, vals in values.items():
            figures[f"r2_{column}"] = metrics.continuous_r2(emb, vals, labels)
        if batches is not None:
            figures["batch_mixing"] = metrics.batch_mixing(emb, batches, sample, min(30, adata.n_obs - 1))
            if integration_metrics:
                sub_labels = None if labels is None else labels[sample]
                keep = np.ones(len(sample), dtype=bool) if sub_labels is None else sub_labels != None  # noqa: E711
                figures.update(metrics.integration_scores(
                    emb[sample[keep]], batches[sample[keep]], None if sub_labels is None else sub_labels[keep]
                ))
        if time_key is not None:
            figures["trajectory_spearman"] = metrics.trajectory_correlation(emb, time, branch)
            figures["trajectory_r2"] = metrics.continuous_r2(emb, time, branch)
        result[key] = {name: float(v) for name, v in figures.items()}
    if "per_group_anisotropy" in result:
        result["per_group_anisotropy"] = pd.DataFrame(result["per_group_anisotropy"])
    return write_result(adata, key_added, Result("quality", result), copy=copy)
