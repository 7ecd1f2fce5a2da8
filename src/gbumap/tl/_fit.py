"""``gbumap.tl.fit``: train a glass-box UMAP on an AnnData."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._anndata_input import InputSpec, feature_matrix, missing_key_error, resolve_input
from .._registry import encode_model
from .._validation import check_finite, looks_like_counts

__all__ = ["fit"]

_VERIFY_CELLS = 2000
_VERIFY_RTOL = 1e-3


def _estimator_params(params: dict[str, Any]) -> dict[str, Any]:
    from .._estimator import GlassBoxUMAP

    valid = set(GlassBoxUMAP().get_params())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise TypeError(
            f"Unknown parameter(s) {', '.join(unknown)}. GlassBoxUMAP accepts: {', '.join(sorted(valid))}."
        )
    return params


def _neighbors_graph(adata: AnnData, neighbors_key: str, rep: str, n_pcs: int | None) -> tuple[sp.csr_matrix, dict]:
    """The connectivities of a ``sc.pp.neighbors`` result, after checking its representation."""
    if neighbors_key not in adata.uns:
        found = [k for k, v in adata.uns.items() if isinstance(v, dict) and "connectivities_key" in v]
        raise missing_key_error("neighbors_key (uns)", neighbors_key, found)
    info = adata.uns[neighbors_key]
    conn_key = str(info.get("connectivities_key", "connectivities"))
    if conn_key not in adata.obsp:
        raise missing_key_error("obsp", conn_key, adata.obsp.keys())
    params = info.get("params", {})
    their_rep = params.get("use_rep")
    if their_rep is None:
        their_rep = "X_pca" if ("X_pca" in adata.obsm and adata.n_vars > 50) else "X"
    if str(their_rep) != rep:
        raise ValueError(
            f"uns[{neighbors_key!r}] was computed on {their_rep!r} but this model trains on {rep!r}; the graph "
            f"would not describe the model's input. Pass use_rep={str(their_rep)!r} (for 'X_pca', gene-level "
            "contributions are recovered from varm['PCs']), or drop neighbors_key to build a new graph."
        )
    their_pcs = params.get("n_pcs")
    if their_pcs is not None and n_pcs is not None and int(their_pcs) != int(n_pcs):
        raise ValueError(
            f"uns[{neighbors_key!r}] used n_pcs={int(their_pcs)} but n_pcs={n_pcs} was requested; use the same number."
        )
    graph = sp.csr_matrix(adata.obsp[conn_key], dtype=np.float32)
    return graph, {"neighbors_key": neighbors_key, "connectivities_key": conn_key, "representation": str(their_rep)}


def _scanpy_loadings(adata: AnnData, use_rep: str, n_cols: int) -> tuple[np.ndarray, np.ndarray] | str:
    """Gene indices and loadings that reproduce ``obsm[use_rep]`` from ``X``, or why not.

    scanpy stores PCA loadings in ``varm["PCs"]`` (zeros or NaN for genes
    left out by the HVG mask). The projection is trusted only when
    ``(X - mean) @ PCs`` reproduces the stored scores on real cells.
    """
    if use_rep != "X_pca":
        return f"obsm[{use_rep!r}] is not scanpy's PCA"
    if "PCs" not in adata.varm:
        return "varm['PCs'] is missing"
    loadings = np.asarray(adata.varm["PCs"], dtype=np.float64)[:, :n_cols]
    if loadings.shape[1] != n_cols:
        return f"varm['PCs'] has {loadings.shape[1]} columns, fewer than the {n_cols} used"
    finite = np.isfinite(loadings).all(axis=1)
    genes = np.flatnonzero(finite & (np.abs(np.nan_to_num(loadings)).sum(axis=1) > 0))
    if len(genes) == 0:
        return "varm['PCs'] has no usable loadings"
    if adata.X is None:
        return "adata.X is missing"
    X = adata.X[:, genes]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(adata.n_obs, size=min(_VERIFY_CELLS, adata.n_obs), replace=False))
    block = X[cells]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    proj = (block.astype(np.float64) - mean) @ loadings[genes]
    stored = np.asarray(adata.obsm[use_rep], dtype=np.float64)[cells, :n_cols]
    err = float(np.abs(proj - stored).max()) / (float(np.abs(stored).max()) or 1.0)
    if not err <= _VERIFY_RTOL:
        return (
            f"(X - mean) @ varm['PCs'] differs from obsm['X_pca'] by a relative {err:.2g} "
            "(X changed after sc.pp.pca, or PCA ran on another layer)"
        )
    return genes, loadings[genes].T


def fit(
    adata: AnnData,
    *,
    use_rep: str | None = None,
    layer: str | None = None,
    mask_var: str | np.ndarray | bool | None = None,
    n_pcs: int | None = None,
    neighbors_key: str | None = None,
    key_added: str = "gbumap",
    copy: bool = False,
    verbose: bool = True,
    random_state: int | None = 0,
    **params: Any,
) -> AnnData | None:
    """Train a glass-box UMAP and write its embedding and model.

    The input is checked before anything is written: missing keys, NaN or
    infinite values, duplicated ``var_names`` and invalid parameters raise an
    error and leave ``adata`` exactly as it was (also when training is
    interrupted with Ctrl-C). Results are written only once everything has
    succeeded.

    Input conventions:

    * **Scale.** Gene-level input should be log-normalised. When a sample of
      the values is integer-valued with a maximum above 50, the data look like
      raw counts and a ``UserWarning`` suggests ``sc.pp.normalize_total`` and
      ``sc.pp.log1p``. Negative values are accepted without a warning: they are
      legitimate for scaled or centred data (``sc.pp.scale``).
    * **Constant or all-zero genes** are fine: they contribute exactly 0 with
      the ``"mean"`` baseline (and with ``"zero"`` when they are all zero).
    * **Dtypes and formats.** Integer, float16, float32 and float64 input,
      dense or sparse (CSR or CSC), is converted to the model's ``dtype``
      without changing the stored matrix.
    * **Views.** ``adata[mask]`` works: as with any scanpy tool, writing the
      results turns the view into an actual AnnData (anndata emits an
      ``ImplicitModificationWarning``); the parent object is never modified.
    * **Backed mode.** An AnnData opened with ``read_h5ad(path, backed="r")``
      is refused with a ``ValueError`` when the input is ``X``, because the PCA,
      the graph and training need the matrix in memory; load it with
      ``adata = adata.to_memory()`` first. (Layers and ``obsm`` of a backed
      object are already in memory and can be used with ``layer=``/``use_rep=``.)

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes), typically log-normalised.
    use_rep
        Train on ``obsm[use_rep]`` instead of genes. For ``"X_pca"`` computed
        by ``sc.pp.pca`` on ``X``, contributions are still attributed to genes
        through ``varm["PCs"]`` once the projection is verified on the data;
        otherwise they are per component, and a warning says why.
    layer
        Train on ``layers[layer]`` instead of ``X``.
    mask_var
        Boolean var column or mask of genes to use. ``None`` uses
        ``var["highly_variable"]`` when it exists; ``False`` uses all genes.
    n_pcs
        With gene input: components of the PCA folded into the model
        (default 50 when there are more than 50 genes; ``0`` for none).
        With ``use_rep``: how many leading columns to use.
    neighbors_key
        Reuse the graph of ``sc.pp.neighbors(..., key_added=neighbors_key)``
        (``"neighbors"`` for the default) instead of searching again. It must
        have been computed on the same representation.
    key_added
        Results go to ``obsm["X_<key_added>"]`` and ``uns[key_added]``.
    copy
        Return a new AnnData instead of writing into ``adata``.
    verbose
        Show a training progress bar.
    random_state
        Seed for PCA, graph and training.
    **params
        Any :class:`~gbumap.GlassBoxUMAP` parameter (``n_neighbors``,
        ``min_dist``, ``n_steps``, ``baseline``, ``accelerator``, ...).

    Returns
    -------
    ``None`` when ``copy=False`` (``adata`` is updated), else the new AnnData with:

    ``obsm["X_<key_added>"]``
        The embedding, ``(n_obs, n_components)`` float32.
    ``uns[key_added]``
        The model registry: parameters, feature names, loadings, baseline,
        encoder weights, training history and reconstruction error.

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.fit(adata, n_steps=100, verbose=False)
    >>> sc.pl.embedding(adata, basis="gbumap", color="bulk_labels")  # doctest: +SKIP
    """
    return _fit(
        adata,
        use_rep=use_rep,
        layer=layer,
        mask_var=mask_var,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        key_added=key_added,
        copy=copy,
        verbose=verbose,
        random_state=random_state,
        measure_error=True,
        params=params,
    )


def _fit(
    adata: AnnData,
    *,
    use_rep: str | None,
    layer: str | None,
    mask_var: str | np.ndarray | bool | None,
    n_pcs: int | None,
    neighbors_key: str | None,
    key_added: str,
    copy: bool,
    verbose: bool,
    random_state: int | None,
    measure_error: bool,
    params: dict[str, Any],
) -> AnnData | None:
    """:func:`fit`; ``measure_error=False`` leaves the reconstruction check to a following
    :func:`gbumap.tl.contributions`, which measures it from the Jacobians it computes anyway."""
    from .._estimator import GlassBoxUMAP

    params = _estimator_params(params)
    spec, mask = resolve_input(adata, layer=layer, use_rep=use_rep, mask_var=mask_var)
    if n_pcs is not None and (isinstance(n_pcs, bool) or int(n_pcs) < 0):
        raise ValueError(f"n_pcs must be a non-negative integer or None; got {n_pcs!r}.")

    components = None
    attribution = "genes"
    projection_source = "none"
    if use_rep is not None:
        rep = np.asarray(adata.obsm[use_rep])
        if rep.ndim != 2:
            raise ValueError(f"obsm[{use_rep!r}] must be 2-D; got shape {rep.shape}.")
        check_finite(rep, name=f"obsm[{use_rep!r}]")  # before any warning about the representation
        n_cols = rep.shape[1] if not n_pcs else min(int(n_pcs), rep.shape[1])
        if "pca_components" in params and params["pca_components"] is not None:
            raise ValueError("pca_components cannot be combined with use_rep; the representation is already reduced.")
        found = _scanpy_loadings(adata, use_rep, n_cols)
        if isinstance(found, str):
            warnings.warn(
                f"Contributions will be per column of obsm[{use_rep!r}], not per gene: {found}.",
                UserWarning,
                stacklevel=2,
            )
            matrix, names = feature_matrix(adata, spec)
            matrix, names = matrix[:, :n_cols], names[:n_cols]
            attribution = "representation"
        else:
            genes, components = found
            names = adata.var_names.to_numpy().astype(str)[genes]
            gene_spec = InputSpec()
            matrix, names = feature_matrix(adata, gene_spec, names)
            spec = InputSpec(use_rep=None)
            projection_source = f"scanpy:{use_rep}"
        rep_name = use_rep
    else:
        matrix, names = feature_matrix(adata, spec)
        if mask is not None:
            matrix, names = matrix[:, np.flatnonzero(mask)], names[mask]
        if "pca_components" not in params:
            if n_pcs is None:
                params["pca_components"] = 50 if matrix.shape[1] > 50 and matrix.shape[0] > 50 else None
            else:
                params["pca_components"] = int(n_pcs) or None
        if params.get("pca_components") is not None:
            projection_source = "gbumap_pca"
        rep_name = "X" if layer is None else f"layer:{layer}"

    if attribution == "genes":
        top = looks_like_counts(matrix)
        if top is not None:
            warnings.warn(
                f"The input ({spec.description}) looks like raw counts: the sampled values are all integers, "
                f"up to {top:g}. gbumap expects log-normalised expression; run sc.pp.normalize_total(adata) "
                "and sc.pp.log1p(adata) first, or pass layer= with normalised values.",
                UserWarning,
                stacklevel=2,
            )

    graph = None
    neighbors_info = {"source": "gbumap"}
    if neighbors_key is not None:
        graph, neighbors_info = _neighbors_graph(adata, neighbors_key, rep_name, n_pcs)
        neighbors_info["source"] = "scanpy"

    est = GlassBoxUMAP(random_state=random_state, verbose=verbose, **params)
    est.fit(matrix, graph=graph, components=components)
    error = est.reconstruction_error(matrix) if measure_error else None

    registry = encode_model(est)
    registry["input"] = spec.to_dict()
    registry["feature_names"] = np.asarray(names, dtype=str)
    registry["attribution"] = attribution
    registry["projection"]["source"] = projection_source
    registry["neighbors"] = neighbors_info
    if error is not None:
        registry["reconstruction_error"] = error
    registry["timings"] = {k: float(v) for k, v in est.timings_.items()}

    target = adata.copy() if copy else adata
    target.obsm[f"X_{key_added}"] = est.embedding_.astype(np.float32)
    target.uns[key_added] = registry
    return target if copy else None
