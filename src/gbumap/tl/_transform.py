"""``gbumap.tl.transform``: map query cells into a reference embedding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import feature_matrix, obs_batches
from .._dask import is_dask_array, store_rows
from .._modalities import imputed_model
from .._mudata import is_mudata
from .._registry import decode_record, encode_record, read_record
from .._validation import check_batch_size

__all__ = ["transform"]


def transform(
    adata: AnnData,
    reference: AnnData | Mapping,
    *,
    key: str = "gbumap",
    key_added: str | None = None,
    fill_missing: Literal["baseline", "zero", "impute"] | None = None,
    contributions: bool = True,
    batch_size: int = 4096,
    batch_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed query cells with a model fitted on a reference, and explain them.

    Genes are aligned by name, so the query may hold more genes or another
    order. Contributions of the query cells are exact too.

    Parameters
    ----------
    adata
        The query AnnData, on the same scale as the reference input
        (e.g. log-normalised).
    reference
        The reference AnnData (or MuData) holding ``uns[key]``, or that registry itself
        (e.g. ``anndata.read_h5ad(path).uns["gbumap"]``).
    key
        The model key in the reference.
    key_added
        Key for the query results (default: ``key``).
    fill_missing
        What to do with model genes absent from the query: ``None`` raises an
        error naming them; ``"baseline"`` sets them to the model's baseline
        (they then contribute exactly 0); ``"zero"`` sets them to 0. For a
        model over several modalities, ``"impute"`` reads a query that lacks
        one whole modality (RNA-only cells onto an RNA + protein map): the
        missing block of the encoder input is the reference's ridge map of the
        present blocks, ``z_m = B_m z_{−m}``, so the query's model is still
        linear in its present features and their contributions sum exactly
        to its position (the missing modality's part is 0; the present
        features carry its effect). Not for batch-corrected models. See
        :doc:`/multimodal` for how far each rule places such cells.
    contributions
        Also store the query cells' Jacobians (``obsm["<key_added>_jacobian"]``).
    batch_size
        Cells per batch.
    batch_key
        For a model fitted with ``batch_key``: the query's ``obs`` column of
        batch labels (default: the reference's ``batch_key``). Cells of a
        batch the reference knows get its stored correction; a new batch (a
        new sample) gets offsets estimated from its own cells, per cluster of
        the reference's correction, as Symphony maps queries onto a Harmony
        reference; they are recorded in the query's copy of the registry.
        The query's contributions are exact either way. A query without the
        column raises an error.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the new AnnData, with ``obsm["X_<key_added>"]``, the
    Jacobians, and a copy of the model registry in ``uns[key_added]`` (so the
    query file is self-contained and :func:`gbumap.get.contributions` works on it).

    Examples
    --------
    >>> gbumap.tl.transform(query, reference)  # doctest: +SKIP
    >>> sc.pl.embedding(query, basis="gbumap")  # doctest: +SKIP
    """
    if fill_missing not in (None, "baseline", "zero", "impute"):
        raise ValueError(f"fill_missing must be None, 'baseline', 'zero' or 'impute'; got {fill_missing!r}.")
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object as the query; got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError(f"The query AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes).")
    batch_size = check_batch_size(batch_size)
    record = (
        read_record(reference, key) if isinstance(reference, AnnData) or is_mudata(reference)
        else decode_record(reference)
    )
    model, names, spec = record.model, record.feature_names, record.input
    labels = None
    if getattr(model, "correction_", None) is not None:
        batch_key = batch_key or record.batch_key
        labels = obs_batches(adata, batch_key, what="the query")
    elif batch_key is not None:
        raise ValueError(
            f"batch_key={batch_key!r} was given but the reference model was fitted without batch correction; "
            "drop batch_key (or refit the reference with gbumap.tl.fit(..., batch_key=...))."
        )
    missing, fill, record = _missing_features(adata, record, fill_missing)
    model, names = record.model, record.feature_names
    # read the query one batch of cells (or one Dask chunk) at a time: memory beyond the outputs stays bounded
    n = adata.n_obs
    embedding = np.empty((n, model.n_components), dtype=np.float32)
    jac = np.empty((n, model.n_components, model.n_inputs_), dtype=model.numpy_dtype) if contributions else None
    lazy, _ = feature_matrix(adata, spec, names, fill=fill, lazy=True)
    new_batches: list[str] = []
    if labels is not None:
        known = set(model.correction_.categories.tolist())
        new_batches = [str(b) for b in pd.unique(labels) if b not in known]
        if new_batches:  # offsets of new batches from their own cells (one projection pass)
            cells = np.flatnonzero(np.isin(labels, new_batches))
            block = lazy[cells] if is_dask_array(lazy) else feature_matrix(adata, spec, names, fill=fill, rows=cells)[0]
            model = model.with_new_batches(block, labels[cells])
            record = record.replace(model=model)
    if is_dask_array(lazy):
        sources, targets = [model.transform(lazy, batches=labels)], [embedding]
        if jac is not None:
            sources.append(model.input_jacobian(lazy, batch_size=batch_size, batches=labels))
            targets.append(jac)
        store_rows(sources, targets, desc="gbumap transform")  # one pass over the chunks, gathered here
    else:
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            X, _ = feature_matrix(adata, spec, names, fill=fill, rows=rows)
            row_labels = None if labels is None else labels[rows]
            embedding[rows] = model.transform(X, batches=row_labels)
            if jac is not None:
                jac[rows] = model.input_jacobian(X, batch_size=batch_size, batches=row_labels)

    key_added = key if key_added is None else key_added
    query = {"n_missing_genes": int(len(missing)), "fill_missing": str(fill_missing)}
    if new_batches:
        query["new_batches"] = np.asarray(new_batches, dtype=str)
    if fill:
        query["missing_genes"] = np.asarray(list(fill), dtype=str)
        query["fill_values"] = np.asarray(list(fill.values()), dtype=np.float64)
    stored = None if jac is None else {"jacobian_key": f"{key_added}_jacobian", "dtype": str(jac.dtype)}
    # the reference's reconstruction error does not describe the query: it is measured on demand
    query_record = record.replace(
        query=query, contributions=stored, reconstruction_error=None,
        batch_key=batch_key if labels is not None else record.batch_key,
    )
    target = adata.copy() if copy else adata
    target.obsm[f"X_{key_added}"] = embedding
    if jac is not None:
        target.obsm[f"{key_added}_jacobian"] = jac
    target.uns[key_added] = encode_record(query_record)
    return target if copy else None


def _missing_features(adata: AnnData, record, fill_missing: str | None):
    """The model features the query lacks, the constants that fill them (or ``None``) and the record to use.

    ``fill_missing="impute"`` returns the record of the imputed model (the
    missing modality read from the others); the others fill constants.
    """
    model, names, spec = record.model, record.feature_names, record.input
    missing = np.array([], dtype=str)
    fill = None
    if spec.use_rep is not None:
        return missing, fill, record
    if adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"The query's var_names contain {len(dups)} duplicated name(s) ({', '.join(map(str, dups[:5]))}"
            f"{' …' if len(dups) > 5 else ''}); genes are matched to the model by name, so call "
            "adata.var_names_make_unique() first."
        )
    missing = names[adata.var_names.get_indexer(pd.Index(names)) < 0]
    if len(missing) and fill_missing is None and record.modalities is not None:
        info = record.modalities
        lacking = [
            f"{str(n)!r} ({int(np.isin(names[info.feature_codes == m], missing).sum())} of "
            f"{int((info.feature_codes == m).sum())} features)"
            for m, n in enumerate(info.names) if np.isin(names[info.feature_codes == m], missing).any()
        ]
        raise KeyError(
            f"The query lacks features of modality {', '.join(lacking)}. Pass fill_missing='impute' to read a whole "
            "missing modality from the others, or fill_missing='baseline' (the missing features then contribute "
            "exactly 0); see the docs' multimodal page for how far each rule places such cells."
        )
    if len(missing) and fill_missing is None:
        raise KeyError(
            f"{len(missing)} of the model's {len(names)} genes are missing from the query: "
            f"{', '.join(missing[:20])}{' …' if len(missing) > 20 else ''}. Subset or rename the query "
            "genes, or pass fill_missing='baseline' (missing genes then contribute exactly 0) or "
            "fill_missing='zero'."
        )
    if len(missing) and fill_missing == "impute":
        if record.modalities is None:
            raise ValueError(
                "fill_missing='impute' reads a missing modality from the others and needs a multimodal model; "
                "pass fill_missing='baseline' or 'zero'."
            )
        model, names, modalities = imputed_model(model, names, record.modalities, missing)
        record = record.replace(model=model, feature_names=names, modalities=modalities)
    elif len(missing):
        base = dict(zip(names.tolist(), model.baseline_.tolist()))
        fill = {g: (base[g] if fill_missing == "baseline" else 0.0) for g in missing}
    return missing, fill, record
