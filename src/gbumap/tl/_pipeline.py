"""``gbumap.tl.glassbox_umap``: the one-call pipeline step."""

from __future__ import annotations

import os
from typing import Any

from anndata import AnnData

from .._anndata_input import sharing_arrays
from .._results import result_key
from .._validation import check_int, obs_groups
from ._contributions import contributions
from ._fit import _fit
from ._rank import rank_features

__all__ = ["glassbox_umap"]


def glassbox_umap(
    adata: AnnData,
    *,
    groupby: str | None = None,
    key_added: str = "gbumap",
    top_genes: int | None = None,
    store: str | os.PathLike | None = None,
    copy: bool = False,
    verbose: bool = True,
    **fit_params: Any,
) -> AnnData | None:
    """Fit a glass-box UMAP, store its contributions and, optionally, rank genes per group.

    The step to put where ``sc.tl.umap`` would go. Defaults suit
    log-normalised data: the highly variable genes when ``var`` marks them, a
    50-component PCA folded into the model (so contributions are per gene),
    and the mean cell as baseline.

    Parameters
    ----------
    adata
        Annotated data matrix, log-normalised.
    groupby
        If given, also run :func:`gbumap.tl.rank_features` on this ``obs`` column.
    key_added
        Model key (``obsm["X_<key_added>"]``, ``uns[key_added]``, ...).
    top_genes
        Also write the sparse per-gene layer of each cell's strongest genes
        (see :func:`gbumap.tl.contributions`).
    store
        Write the Jacobians chunk by chunk into this zarr directory or
        ``.h5ad`` file and keep a lazy reader in ``obsm`` (see
        :func:`gbumap.tl.contributions`); for atlases read from disk.
    copy
        Return a new AnnData instead of writing into ``adata``.
    verbose
        Show progress bars.
    **fit_params
        Passed to :func:`gbumap.tl.fit` (``use_rep``, ``layer``, ``n_pcs``,
        ``neighbors_key``, ``neighbors_any_rep``, ``batch_key``, ``modality_key``,
        ``modality_weighting``, ``modality_weights`` and any
        :class:`~gbumap.GlassBoxUMAP` parameter).

    Returns
    -------
    ``None`` or the new AnnData with the embedding, the model registry, the
    Jacobians (``obsm["<key_added>_jacobian"]``) and, with ``groupby``, the
    rankings in ``uns["rank_features_<key_added>"]``.

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", n_steps=100, verbose=False)
    >>> "X_gbumap" in adata.obsm and "rank_features_gbumap" in adata.uns
    True
    """
    if groupby is not None:  # fail before training, not after it
        obs_groups(adata, groupby, min_groups=2, min_cells=2, purpose="; ranking needs at least 2 per group")
        result_key(adata, "rank_features", None, key_added)
    if top_genes is not None:
        check_int(top_genes, "top_genes")
    named = {
        k: fit_params.pop(k, None)
        for k in ("use_rep", "layer", "mask_var", "n_pcs", "neighbors_key", "batch_key", "modality_key",
                  "modality_weights")
    }
    named["modality_weighting"] = fit_params.pop("modality_weighting", "variance")
    named["neighbors_any_rep"] = fit_params.pop("neighbors_any_rep", False)
    random_state = fit_params.pop("random_state", 0)
    # results are written into a scratch object first, so Ctrl-C or an error leaves adata as it was
    # (a backed adata's X enters the scratch object as a Dask array over its file)
    scratch = not (copy or adata.is_view)
    work = sharing_arrays(adata) if scratch else adata
    # contributions() measures the reconstruction error from its Jacobians: skip fit's own pass
    fitted = _fit(
        work,
        **named,
        key_added=key_added,
        copy=not scratch,
        verbose=verbose,
        random_state=random_state,
        measure_error=False,
        params=fit_params,
    )
    work = work if fitted is None else fitted
    contributions(work, key=key_added, top_genes=top_genes, store=store, verbose=verbose)
    if groupby is not None:
        rank_features(work, groupby, key=key_added)
    if copy:
        return work
    _copy_results(work, adata, key_added)
    return None


def _copy_results(source: AnnData, target: AnnData, key: str) -> None:
    for k in (f"X_{key}", f"{key}_jacobian"):
        if k in source.obsm:
            target.obsm[k] = source.obsm[k]
    if f"{key}_l2" in source.layers:
        target.layers[f"{key}_l2"] = source.layers[f"{key}_l2"]
    for k in (key, f"rank_features_{key}"):
        if k in source.uns:
            target.uns[k] = source.uns[k]
