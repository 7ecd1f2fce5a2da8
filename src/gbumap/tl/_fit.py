"""``gbumap.tl.fit``: train a glass-box UMAP on an AnnData."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._anndata_input import choose_input, guard_model_key, obs_batches
from .._registry import ModelRecord, encode_record
from .._validation import looks_like_counts

__all__ = ["fit"]

def _estimator_params(params: dict[str, Any]) -> dict[str, Any]:
    from .._estimator import GlassBoxUMAP

    valid = set(GlassBoxUMAP().get_params())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise TypeError(
            f"Unknown parameter(s) {', '.join(unknown)}. GlassBoxUMAP accepts: {', '.join(sorted(valid))}."
        )
    return params


def fit(
    adata: AnnData,
    *,
    use_rep: str | None = None,
    layer: str | None = None,
    mask_var: str | np.ndarray | bool | None = None,
    n_pcs: int | Mapping[str, int] | None = None,
    neighbors_key: str | None = None,
    neighbors_any_rep: bool = False,
    batch_key: str | None = None,
    modality_key: str | None = None,
    modality_weighting: Literal["variance", "neighbors"] = "variance",
    modality_weights: Mapping[str, float] | None = None,
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
    * **Data on disk.** ``X`` (or the layer) may be a Dask array, e.g. read
      lazily from an ``.h5ad`` or zarr store, and ``adata`` may be opened with
      ``read_h5ad(path, backed="r")``: the gene means, the PCA and the
      projection are then passes over row chunks, and only the cells × PCs
      matrix is held in memory. The model is the same as from the matrix in
      memory (see :doc:`/scale`). A Dask array with unknown chunk sizes, or
      with row chunks too large for the available memory, is refused with an
      error saying how to rechunk.

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
        have been computed on the same representation, unless
        ``neighbors_any_rep=True``.
    neighbors_any_rep
        Accept a ``neighbors_key`` graph computed on another representation
        (an integrated one: ``X_pca_harmony``, scVI's ``X_scVI``, BBKNN's
        batch-balanced graph) as the layout target. The encoder still reads
        genes, so contributions stay per gene; the registry records which
        graph (and representation) the layout followed. Without it such a
        graph is refused, since it would not describe the model's input.
    batch_key
        ``obs`` column of batch labels (sample, donor, site): the batches are
        integrated inside the model (``batch_correction="harmony"`` by
        default, or ``"baseline"``), the graph is built on the corrected
        input, and the contributions still sum exactly to the embedding; each
        gene's contribution splits into an expression part and a correction
        part (:func:`gbumap.get.contributions` with ``part=``). New samples
        are mapped with :func:`gbumap.tl.transform`. See :doc:`/integration`.
    modality_key
        ``var`` column naming each feature's modality (``"feature_types"``,
        with ``"GEX"`` and ``"ADT"``, in CITE-seq files): one model over all
        modalities, each with its own projection (``n_pcs`` may be a mapping by
        modality; by default a 50-component PCA for a modality of more than 50
        features, else its features as they are) and a weight that puts the
        modalities on one scale. Every feature of every modality is used unless
        ``mask_var`` is given (``highly_variable`` is not applied implicitly).
        Contributions are per feature, genes and proteins alike, and
        :func:`gbumap.get.modality_contributions` splits each cell's position
        exactly by modality. For a MuData, pass it directly: its modalities are
        used. See :doc:`/multimodal`.
    modality_weighting
        How the modalities are balanced: ``"variance"`` (default; each block
        divided by its root mean squared norm, so each modality brings the same
        total variance) or ``"neighbors"`` (each block divided by its median
        distance to the ``n_neighbors``-th neighbour). Both are measured on up
        to 5,000 cells; ``benchmarks/multimodal.py`` chose the default.
    modality_weights
        Relative emphasis by modality, multiplied into the balanced weights
        (e.g. ``{"ADT": 2.0}``); 1 for modalities not named.
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
        neighbors_any_rep=neighbors_any_rep,
        batch_key=batch_key,
        modality_key=modality_key,
        modality_weighting=modality_weighting,
        modality_weights=modality_weights,
        key_added=key_added,
        copy=copy,
        verbose=verbose,
        random_state=random_state,
        measure_error=True,
        params=params,
    )


def _fit(  # noqa: PLR0913 (fit's options, passed on by fit and glassbox_umap)
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
    neighbors_any_rep: bool = False,
    batch_key: str | None = None,
    modality_key: str | None = None,
    modality_weighting: str = "variance",
    modality_weights: Mapping[str, float] | None = None,
) -> AnnData | None:
    """:func:`fit`; ``measure_error=False`` leaves the reconstruction check to a following
    :func:`gbumap.tl.contributions`, which measures it from the Jacobians it computes anyway."""
    from .._estimator import GlassBoxUMAP

    params = _estimator_params(params)
    choice = choose_input(
        adata, use_rep=use_rep, layer=layer, mask_var=mask_var, n_pcs=n_pcs, neighbors_key=neighbors_key,
        params=params, neighbors_any_rep=neighbors_any_rep, modality_key=modality_key,
        modality_weighting=modality_weighting, modality_weights=modality_weights, random_state=random_state,
    )
    guard_model_key(adata, key_added)
    batches = obs_batches(adata, batch_key)
    if choice.attribution == "representation":
        warnings.warn(
            f"Contributions will be per column of obsm[{use_rep!r}], not per gene: {choice.why_not_genes}.",
            UserWarning,
            stacklevel=3,
        )
    else:
        top = looks_like_counts(choice.matrix)
        if top is not None:
            warnings.warn(
                f"The input ({choice.spec.description}) looks like raw counts: the sampled values are all integers, "
                f"up to {top:g}. gbumap expects log-normalised expression; run sc.pp.normalize_total(adata) "
                "and sc.pp.log1p(adata) first, or pass layer= with normalised values.",
                UserWarning,
                stacklevel=3,
            )

    est = GlassBoxUMAP(random_state=random_state, verbose=verbose, **choice.params)
    est.fit(choice.matrix, graph=choice.graph, components=choice.components, batches=batches)
    if choice.modalities is not None and batches is None:
        # the maps a query without one modality reads its block through (tl.transform(fill_missing="impute"))
        from .._modalities import fit_imputation, sample_rows

        choice.modalities.imputation = fit_imputation(
            est.offset_projection(sample_rows(choice.matrix, 0 if random_state is None else int(random_state))),
            choice.modalities,
        )
    record = ModelRecord(
        model=est,
        feature_names=choice.feature_names,
        input=choice.spec,
        attribution=choice.attribution,
        projection_source=choice.projection_source,
        neighbors=choice.neighbors,
        timings=dict(est.timings_),
        reconstruction_error=est.reconstruction_error(choice.matrix, batches=batches) if measure_error else None,
        batch_key=batch_key,
        modalities=choice.modalities,
    )
    target = adata.copy() if copy else adata
    target.obsm[f"X_{key_added}"] = est.embedding_.astype(np.float32)
    target.uns[key_added] = encode_record(record)
    return target if copy else None
