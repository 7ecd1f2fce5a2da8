"""``gbumap.pp.normalize_modalities``: counts of several modalities, each prepared by its convention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._dask import is_dask_array
from .._validation import check_number, missing_key_error

__all__ = ["METHODS", "normalize_modalities"]

#: How each kind of modality is prepared: ``"log1p"`` (counts per cell scaled to ``target_sum``, then
#: ``log1p``, as ``sc.pp.normalize_total`` + ``sc.pp.log1p``) and ``"clr"`` (muon's ``prot.pp.clr`` across
#: cells, Seurat's flavour).
METHODS: tuple[str, ...] = ("log1p", "clr")

#: Modality names recognised without ``methods=`` (CITE-seq files, 10x feature types, MuData conventions).
DEFAULT_METHODS: dict[str, str] = {
    "GEX": "log1p", "Gene Expression": "log1p", "RNA": "log1p", "rna": "log1p",
    "ADT": "clr", "Antibody Capture": "clr", "prot": "clr", "protein": "clr", "Protein": "clr",
}


def normalize_modalities(
    adata: AnnData,
    modality_key: str = "feature_types",
    *,
    layer: str | None = "counts",
    methods: Mapping[str, Literal["log1p", "clr"]] | None = None,
    target_sum: float = 1e4,
    key_added: str = "gbumap_normalized",
    copy: bool = False,
) -> AnnData | None:
    """Prepare raw counts of several modalities, each by its convention, into a new layer.

    RNA is normalised to ``target_sum`` counts per cell over the RNA features
    alone and log-transformed (``sc.pp.normalize_total`` + ``sc.pp.log1p``);
    proteins are CLR-normalised across cells (``muon.prot.pp.clr``, which
    needs ``muon``). The result goes to ``layers[key_added]``, and what was
    done to ``uns[key_added]``, so a model fitted with ``layer=key_added``
    records each modality's preparation. ``X`` and the input layer are never
    changed.

    Parameters
    ----------
    adata
        AnnData with counts of every modality side by side (or a MuData: each
        modality's layer is prepared and written into that modality).
    modality_key
        ``var`` column naming each feature's modality.
    layer
        Where the counts are (``None``: ``X``).
    methods
        How to prepare each modality, ``"log1p"`` or ``"clr"``, by name. Names
        CITE-seq and 10x files use (``"GEX"``/``"Gene Expression"``/``"rna"``;
        ``"ADT"``/``"Antibody Capture"``/``"prot"``) are recognised without it.
    target_sum
        Counts per cell after normalisation, for ``"log1p"``.
    key_added
        The layer written (and the ``uns`` record of what was done).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the new AnnData, with ``layers[key_added]`` (float32, sparse
    when the counts are) and ``uns[key_added]`` (``modality_key``, ``layer``,
    ``modalities``, ``methods``, ``target_sum``).

    Examples
    --------
    >>> import gbumap
    >>> from gbumap.datasets import simulate
    >>> adata = simulate(1_000, 1_000, n_proteins=24, random_state=0)
    >>> gbumap.pp.normalize_modalities(adata)  # from layers["counts"]
    >>> gbumap.tl.fit(adata, modality_key="feature_types", layer="gbumap_normalized", n_steps=50, verbose=False)
    >>> list(adata.uns["gbumap"]["modalities"]["preparation"])
    ['log1p', 'clr']
    """
    if modality_key not in adata.var.columns:
        raise missing_key_error("var column (modality_key)", modality_key, adata.var.columns)
    if layer is not None and layer not in adata.layers:
        raise missing_key_error("layer", layer, adata.layers.keys())
    if key_added in adata.layers and key_added == layer:
        raise ValueError(f"key_added={key_added!r} is the input layer; pick another name (the input is never changed).")
    check_number(target_sum, "target_sum", 0.0, strict=True)
    labels = adata.var[modality_key].astype(str).to_numpy()
    names = list(dict.fromkeys(labels))
    chosen = {}
    for name in names:
        method = (methods or {}).get(name, DEFAULT_METHODS.get(name))
        if method is None:
            raise ValueError(
                f"No preparation known for modality {name!r}; pass methods={{{name!r}: 'log1p' or 'clr'}}."
            )
        if method not in METHODS:
            raise ValueError(f"methods[{name!r}] must be 'log1p' or 'clr'; got {method!r}.")
        chosen[name] = method
    if methods:
        unknown = sorted(set(methods) - set(names))
        if unknown:
            raise ValueError(f"methods names unknown modalities {unknown}; var[{modality_key!r}] holds {names}.")
    if "clr" in chosen.values():
        try:
            import muon  # noqa: F401
        except ImportError:
            raise ImportError(
                "CLR normalisation uses muon (muon.prot.pp.clr): pip install muon (or gbumap[multimodal])."
            ) from None
    counts = adata.X if layer is None else adata.layers[layer]
    where = "X" if layer is None else f"layers[{layer!r}]"
    if is_dask_array(counts):
        raise ValueError(
            f"{where} is a lazy Dask array: normalize_modalities writes an in-memory layer of the same size, "
            "and the CLR of proteins needs every cell at once, so it would load the counts whole. Load them first "
            "(adata = adata.to_memory()), or prepare each modality in your own chunked pipeline and pass the "
            "prepared values to gbumap.tl.fit."
        )
    if not sp.issparse(counts):
        counts = np.asarray(counts)
    blocks = []
    for name in names:
        cols = np.flatnonzero(labels == name)
        block = counts[:, cols]
        values = block.data if sp.issparse(block) else block
        if values.size and values.min() < 0:
            raise ValueError(
                f"Modality {name!r} has negative values in {where} ({int((values < 0).sum())} of them), so they are "
                "not raw counts; pass layer= with the counts of every modality."
            )
        blocks.append((cols, block))
    blocks = [(cols, _prepare(block, chosen[name], float(target_sum))) for name, (cols, block) in zip(names, blocks)]
    out = _assemble(blocks, adata.n_obs, adata.n_vars, sparse=sp.issparse(counts))
    target = adata.copy() if copy else adata
    target.layers[key_added] = out
    target.uns[key_added] = {
        "modality_key": modality_key, "layer": "X" if layer is None else layer,
        "modalities": np.asarray(names, dtype=str), "methods": np.asarray([chosen[n] for n in names], dtype=str),
        "target_sum": float(target_sum),
    }
    return target if copy else None


def _prepare(block, method: str, target_sum: float):
    """One modality's counts, prepared (float32; sparse in, sparse out)."""
    if method == "clr":
        import muon as mu

        tmp = AnnData(sp.csc_matrix(block, dtype=np.float32) if sp.issparse(block) else block.astype(np.float32))
        mu.prot.pp.clr(tmp, axis=0)
        return tmp.X
    totals = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    if sp.issparse(block):
        scaled = sp.csr_matrix(sp.diags(scale) @ block, dtype=np.float64)
        scaled.data = np.log1p(scaled.data)
        return scaled.astype(np.float32)
    return np.log1p(np.asarray(block, dtype=np.float64) * scale[:, None]).astype(np.float32)


def _assemble(blocks, n_obs: int, n_vars: int, sparse: bool):
    """The prepared modalities back in the features' original order."""
    order = np.argsort(np.concatenate([cols for cols, _ in blocks]), kind="stable")
    if sparse:
        return sp.hstack([sp.csr_matrix(b) for _, b in blocks], format="csr", dtype=np.float32)[:, order]
    return np.hstack([np.asarray(b.toarray() if sp.issparse(b) else b) for _, b in blocks])[:, order]
