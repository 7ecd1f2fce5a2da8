"""Finding the matrix a model is trained on, or explains, inside an AnnData."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._modalities import Modalities
from ._validation import Matrix, as_matrix, check_int, missing_key_error, obs_column, obs_groups

__all__ = [
    "InputChoice",
    "InputSpec",
    "choose_input",
    "feature_matrix",
    "guard_model_key",
    "missing_key_error",
    "obs_batches",
    "resolve_input",
    "select_cells",
    "select_obs",
    "sharing_arrays",
    "x_matrix",
]

# How many cells verify that (X - mean) @ varm["PCs"] reproduces a stored obsm["X_pca"], and how closely.
_VERIFY_CELLS = 2000
_VERIFY_RTOL = 1e-3


@dataclass
class InputSpec:
    """Where a model's input lives: ``X``, a layer, or an ``obsm`` representation."""

    layer: str | None = None
    use_rep: str | None = None
    mask_var: str | None = None

    @property
    def description(self) -> str:
        if self.use_rep is not None:
            return f"obsm[{self.use_rep!r}]"
        if self.layer is not None:
            return f"layers[{self.layer!r}]"
        return "X"

    def to_dict(self) -> dict:
        out = {"source": "obsm" if self.use_rep else ("layer" if self.layer else "X")}
        if self.layer is not None:
            out["layer"] = self.layer
        if self.use_rep is not None:
            out["use_rep"] = self.use_rep
        if self.mask_var is not None:
            out["mask_var"] = self.mask_var
        return out

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(
            layer=str(d["layer"]) if "layer" in d else None,
            use_rep=str(d["use_rep"]) if "use_rep" in d else None,
            mask_var=str(d["mask_var"]) if "mask_var" in d else None,
        )


def _raw_matrix(adata: AnnData, spec: InputSpec):
    if spec.use_rep is not None:
        if spec.use_rep not in adata.obsm:
            raise missing_key_error("obsm", spec.use_rep, adata.obsm.keys())
        return adata.obsm[spec.use_rep]
    if spec.layer is not None:
        if spec.layer not in adata.layers:
            raise missing_key_error("layer", spec.layer, adata.layers.keys())
        return adata.layers[spec.layer]
    if adata.X is None:
        raise ValueError("adata.X is None; pass layer= or use_rep= to choose the input.")
    return x_matrix(adata)


def x_matrix(adata: AnnData):
    """``adata.X``; for a backed AnnData a Dask array over its file (:func:`backed_as_dask`), never read whole."""
    return backed_as_dask(adata) if adata.isbacked else adata.X


def backed_as_dask(adata: AnnData):
    """The ``X`` of a backed AnnData as a Dask array over the open file (rows of about 64 MiB, dense)."""
    try:
        from anndata.experimental import read_elem_lazy
    except ImportError as err:  # anndata < 0.11
        raise ValueError(
            f"adata is in backed mode (X stays on disk in {adata.filename}); reading it in chunks needs "
            "anndata >= 0.11 and dask. Upgrade them, or load it with adata = adata.to_memory()."
        ) from err
    from ._dask import scheduler_kind

    X = adata.file["X"]
    if X.file.mode != "r" and scheduler_kind() != "shared":
        raise ValueError(
            f"adata is backed by {adata.filename} opened for writing (backed='r+'), and Dask runs its tasks in "
            "other processes (a distributed Client, or the 'processes' scheduler): they cannot open the file "
            "while this process holds it for writing (HDF5 locks it). Open it with "
            "anndata.read_h5ad(path, backed='r') and pass store= another file or a .zarr directory, or run "
            "this call on the threaded scheduler (with dask.config.set(scheduler='threads'): ...)."
        )
    rows = max(1024, min(adata.n_obs, 2**24 // max(adata.n_vars, 1)))
    return read_elem_lazy(X, chunks=(rows, adata.n_vars))


def resolve_input(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    mask_var: str | np.ndarray | None = None,
) -> tuple[InputSpec, np.ndarray | None]:
    """Validate the input choice; return it and the boolean gene mask (or ``None``).

    ``mask_var=None`` uses ``var["highly_variable"]`` when that column exists
    and the input is gene-level; ``mask_var=False`` uses every gene.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object; got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes).")
    if layer is not None and use_rep is not None:
        raise ValueError("Pass either layer= or use_rep=, not both.")
    spec = InputSpec(layer=layer, use_rep=use_rep)
    _raw_matrix(adata, spec)  # raises for missing keys
    if use_rep is None and adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"var_names contain {len(dups)} duplicated name(s) ({', '.join(map(str, dups[:5]))}"
            f"{' …' if len(dups) > 5 else ''}); genes are matched by name, so call "
            "adata.var_names_make_unique() first."
        )
    if use_rep is not None:
        if mask_var is not None and mask_var is not False:
            raise ValueError("mask_var selects genes and cannot be combined with use_rep.")
        return spec, None
    if mask_var is False:
        return spec, None
    if mask_var is None:
        if "highly_variable" not in adata.var.columns:
            return spec, None
        mask_var = "highly_variable"
    if isinstance(mask_var, str):
        if mask_var not in adata.var.columns:
            raise missing_key_error("var column", mask_var, adata.var.columns)
        spec.mask_var = mask_var
        mask = adata.var[mask_var].to_numpy()
    else:
        mask = np.asarray(mask_var)
    if mask.dtype != bool or mask.shape != (adata.n_vars,):
        raise ValueError(f"mask_var must be a boolean var column or array of length {adata.n_vars}.")
    if not mask.any():
        raise ValueError("mask_var selects no genes.")
    return spec, mask


def feature_matrix(
    adata: AnnData,
    spec: InputSpec,
    features: np.ndarray | None = None,
    fill: dict[str, float] | None = None,
    rows: np.ndarray | slice | None = None,
    lazy: bool = False,
) -> tuple[Matrix, np.ndarray]:
    """The input matrix and its feature names, optionally restricted to ``features``.

    For gene-level input ``features`` are gene names looked up in
    ``var_names``; a gene that is missing raises a ``KeyError`` naming it,
    unless ``fill`` gives a constant value for it. ``rows`` restricts the
    result to those cells before any column selection, so that streaming
    callers never copy more than one batch. When ``features`` are all of
    ``var_names`` in order, the matrix is returned without a column copy.

    Input held as a Dask array (or a backed ``X``) stays lazy with
    ``lazy=True`` (for the callers that pass over it chunk by chunk); otherwise
    the selected rows are read into memory.
    """
    from ._dask import is_dask_array

    raw = _raw_matrix(adata, spec)
    if rows is not None:
        raw = raw.iloc[rows] if isinstance(raw, pd.DataFrame) else raw[rows]
    if is_dask_array(raw) and not lazy:
        raw = raw.compute()
    if spec.use_rep is not None:
        names = np.array([f"{spec.use_rep}_{i + 1}" for i in range(np.asarray(raw).shape[1])])
        if isinstance(raw, pd.DataFrame):
            names = raw.columns.astype(str).to_numpy()
        mat = as_matrix(raw, name=spec.description)
        if features is not None:
            if mat.shape[1] < len(features):
                raise ValueError(
                    f"{spec.description} has {mat.shape[1]} columns but the model expects {len(features)}."
                )
            mat, names = mat[:, : len(features)], np.asarray(features)
        return mat, names
    if features is None:
        return as_matrix(raw, name=spec.description), adata.var_names.to_numpy().astype(str)
    if adata.var_names.has_duplicates:
        raise ValueError("var_names contain duplicates; call adata.var_names_make_unique() first.")
    features = np.asarray(features).astype(str)
    idx = adata.var_names.get_indexer(pd.Index(features))
    absent = idx < 0
    fill = fill or {}
    unfilled = [g for g in features[absent] if g not in fill]
    if unfilled:
        raise KeyError(
            f"{len(unfilled)} of the model's {len(features)} genes are missing from var_names: "
            f"{', '.join(unfilled[:20])}{' …' if len(unfilled) > 20 else ''}."
        )
    present = np.flatnonzero(~absent)
    if not absent.any() and len(idx) == raw.shape[1] and np.array_equal(idx, np.arange(len(idx))):
        return as_matrix(raw, name=spec.description), features
    mat = as_matrix(raw[:, idx[present]], name=spec.description)
    if not absent.any():
        return mat, features
    values = np.array([fill[g] for g in features[absent]], dtype=mat.dtype)
    order = np.argsort(np.concatenate([present, np.flatnonzero(absent)]), kind="stable")
    if is_dask_array(mat):
        filled = mat.map_blocks(_with_constant_columns, values, order, chunks=(mat.chunks[0], (len(features),)))
        return filled, features
    return _with_constant_columns(mat, values, order), features


def _with_constant_columns(mat: Matrix, values: np.ndarray, order: np.ndarray) -> Matrix:
    """``mat`` with constant columns ``values`` appended, then all columns put in ``order``."""
    constant = sp.csr_matrix(np.broadcast_to(values, (mat.shape[0], len(values))))
    full = sp.hstack([sp.csr_matrix(mat), constant], format="csc")[:, order]
    return sp.csr_matrix(full) if sp.issparse(mat) else full.toarray()


def obs_batches(adata: AnnData, batch_key: str | None, *, what: str = "adata") -> np.ndarray | None:
    """The batch labels ``obs[batch_key]`` as strings (``None`` without a key), refusing missing labels.

    Checked before any computation, so a bad column leaves ``adata`` untouched.
    """
    if batch_key is None:
        return None
    if not isinstance(batch_key, str):
        raise TypeError(f"batch_key must be an obs column name (str); got {type(batch_key).__name__}.")
    column = obs_column(adata, batch_key, what=f"obs column (batch_key, in {what})")
    from ._batch_correction import batch_labels

    return batch_labels(column, name=f"obs[{batch_key!r}] of {what}")


def guard_model_key(adata: AnnData, key: str) -> None:
    """Refuse to write a model under ``key`` when ``uns[key]`` holds something that is not a gbumap model.

    A fitted model under ``key`` may be replaced (refitting is explicit); a
    user's own ``uns`` entry (or another tool's result) is never overwritten.
    """
    from collections.abc import Mapping

    if key in adata.uns:
        entry = adata.uns[key]
        if not (isinstance(entry, Mapping) and "format_version" in entry and "encoder" in entry):
            raise ValueError(
                f"uns[{key!r}] already holds something that is not a gbumap model ({type(entry).__name__}); "
                f"gbumap will not overwrite it. Pass another key_added=, or delete adata.uns[{key!r}] first."
            )


def select_obs(adata: AnnData, obs) -> np.ndarray:
    """Integer row indices for ``obs``: None (all), a boolean mask, names, or integers."""
    if obs is None:
        return np.arange(adata.n_obs)
    if isinstance(obs, slice):
        return np.arange(adata.n_obs)[obs]
    arr = np.asarray(obs)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype == bool:
        if arr.shape != (adata.n_obs,):
            raise ValueError(f"A boolean obs mask must have length n_obs={adata.n_obs}; got {arr.shape}.")
        return np.flatnonzero(arr)
    if np.issubdtype(arr.dtype, np.integer):
        if len(arr) and (arr.min() < -adata.n_obs or arr.max() >= adata.n_obs):
            raise IndexError(f"obs indices out of range for {adata.n_obs} cells.")
        return arr % adata.n_obs
    idx = adata.obs_names.get_indexer(pd.Index(arr.astype(str)))
    if (idx < 0).any():
        missing = arr[idx < 0]
        raise KeyError(f"Cells not in obs_names: {', '.join(map(str, missing[:10]))}.")
    return idx



def select_cells(
    adata: AnnData,
    obs=None,
    groupby: str | None = None,
    group: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, str]:
    """Integer rows of a cell selection and a short description of it."""
    if (groupby is None) != (group is None):
        raise ValueError("Pass groupby and group together (e.g. groupby='bulk_labels', group='CD14+ Monocyte').")
    rows = select_obs(adata, obs)
    parts = [] if obs is None else ["selected cells"]
    if groupby is not None:
        chosen = obs_groups(adata, groupby, group, what="group")
        in_group = np.flatnonzero(chosen.group_of >= 0)
        rows = np.intersect1d(rows, in_group) if obs is not None else in_group
        parts.append(f"{groupby} = {', '.join(chosen.names)}")
    if len(rows) == 0:
        raise ValueError("The selection contains no cells.")
    return rows, " & ".join(parts) if parts else "all cells"


def sharing_arrays(adata: AnnData, *, obs_columns=None, uns_keys=None) -> AnnData:
    """An AnnData with its own containers around ``adata``'s arrays.

    New keys written into it never reach ``adata``, and nothing is copied (a
    deep copy would hold a second ``X`` in memory); gbumap never writes into
    existing arrays. ``obs_columns`` and ``uns_keys`` keep only those entries.
    A backed ``X`` becomes a Dask array over the file.
    """
    if obs_columns is not None:  # a batch-corrected model kept here needs its batch column too
        obs_columns = list(obs_columns)
        for k in uns_keys or ():
            correction = adata.uns.get(k, {}).get("batch_correction") if isinstance(adata.uns.get(k), dict) else None
            batch_key = None if correction is None else str(correction.get("batch_key"))
            if batch_key in adata.obs.columns and batch_key not in obs_columns:
                obs_columns.append(batch_key)
    obs = adata.obs if obs_columns is None else adata.obs[list(obs_columns)].copy()
    uns = dict(adata.uns) if uns_keys is None else {k: adata.uns[k] for k in uns_keys if k in adata.uns}
    return AnnData(
        X=x_matrix(adata),
        obs=obs,
        var=adata.var,
        uns=uns,
        obsm=dict(adata.obsm),
        varm=dict(adata.varm),
        layers=dict(adata.layers),
        obsp=dict(adata.obsp),
    )


# ---------------------------------------------------------------------- choosing the model's input
@dataclass
class InputChoice:
    """What a model is trained on, decided in one place (as scanpy's ``_choose_representation``).

    ``matrix`` holds the training input and ``feature_names`` its columns;
    ``components`` are scanpy's loadings when an ``obsm["X_pca"]`` is traced
    back to genes; ``graph`` is a checked ``sc.pp.neighbors`` graph (or
    ``None``); ``params`` are the estimator parameters with the PCA size set.
    """

    matrix: Matrix
    feature_names: np.ndarray
    spec: InputSpec
    params: dict
    components: np.ndarray | None = None
    attribution: str = "genes"
    projection_source: str = "none"
    why_not_genes: str | None = None
    graph: sp.csr_matrix | None = None
    neighbors: dict | None = None
    modalities: Modalities | None = None

    def __post_init__(self) -> None:
        if self.neighbors is None:
            self.neighbors = {"source": "gbumap"}


def choose_input(
    adata: AnnData,
    *,
    use_rep: str | None,
    layer: str | None,
    mask_var,
    n_pcs: int | None,
    neighbors_key: str | None,
    params: dict,
    neighbors_any_rep: bool = False,
    modality_key: str | None = None,
    modality_weighting: str = "variance",
    modality_weights=None,
    random_state: int | None = 0,
) -> InputChoice:
    """Validate and resolve every input option of ``tl.fit`` into one :class:`InputChoice`.

    Raises before anything is computed for missing keys, NaN or infinite
    values, inconsistent options and a neighbour graph computed on another
    representation.
    """
    from ._validation import check_finite

    if modality_key is not None:
        if use_rep is not None:
            raise ValueError(
                "modality_key= reads the features of every modality and cannot be combined with use_rep=; "
                "drop use_rep (each modality gets its own PCA inside the model: n_pcs= per modality)."
            )
        # several modalities: every feature unless mask_var says otherwise (an RNA-only HVG column would drop the
        # proteins)
        spec, mask = resolve_input(adata, layer=layer, mask_var=False if mask_var is None else mask_var)
    else:
        spec, mask = resolve_input(adata, layer=layer, use_rep=use_rep, mask_var=mask_var)
        check_int(n_pcs, "n_pcs", 0, optional=True)
    params = dict(params)
    if modality_key is not None:
        choice = _multimodal_choice(
            adata, spec, mask, modality_key, n_pcs, params, modality_weighting, modality_weights, random_state
        )
        n_pcs = None  # per modality: not comparable with a scanpy graph's n_pcs
        rep_name = "X" if layer is None else f"layer:{layer}"
    elif use_rep is not None:
        rep = np.asarray(adata.obsm[use_rep])
        if rep.ndim != 2:
            raise ValueError(f"obsm[{use_rep!r}] must be 2-D; got shape {rep.shape}.")
        check_finite(rep, name=f"obsm[{use_rep!r}]")
        n_cols = rep.shape[1] if not n_pcs else min(int(n_pcs), rep.shape[1])
        if params.get("pca_components") is not None:
            raise ValueError("pca_components cannot be combined with use_rep; the representation is already reduced.")
        found = _scanpy_loadings(adata, use_rep, n_cols)
        if isinstance(found, str):
            matrix, names = feature_matrix(adata, spec, lazy=True)
            choice = InputChoice(matrix[:, :n_cols], names[:n_cols], spec, params, attribution="representation",
                                 why_not_genes=found)
        else:
            genes, components = found
            names = adata.var_names.to_numpy().astype(str)[genes]
            matrix, names = feature_matrix(adata, InputSpec(), names, lazy=True)
            choice = InputChoice(matrix, names, InputSpec(), params, components=components,
                                 projection_source=f"scanpy:{use_rep}")
        rep_name = use_rep
    else:
        matrix, names = feature_matrix(adata, spec, lazy=True)
        if mask is not None:
            matrix, names = matrix[:, np.flatnonzero(mask)], names[mask]
        if "pca_components" not in params:
            if n_pcs is None:
                params["pca_components"] = 50 if matrix.shape[1] > 50 and matrix.shape[0] > 50 else None
            else:
                params["pca_components"] = int(n_pcs) or None
        source = "gbumap_pca" if params.get("pca_components") is not None else "none"
        choice = InputChoice(matrix, names, spec, params, projection_source=source)
        rep_name = "X" if layer is None else f"layer:{layer}"
    if neighbors_key is not None:
        choice.graph, choice.neighbors = _neighbors_graph(adata, neighbors_key, rep_name, n_pcs, neighbors_any_rep)
        choice.neighbors["source"] = "scanpy"
    elif neighbors_any_rep:
        raise ValueError("neighbors_any_rep=True needs neighbors_key= (the graph to follow).")
    return choice


def _multimodal_choice(
    adata: AnnData, spec: InputSpec, mask, modality_key: str, n_pcs, params: dict, weighting: str, weights,
    seed: int | None,
) -> InputChoice:
    """Every modality's features side by side, with the block-diagonal loadings of :mod:`gbumap._modalities`."""
    from ._dask import column_stats, is_dask_array, row_chunked
    from ._modalities import fit_modalities, modality_codes, preparation_of

    if modality_key not in adata.var.columns:
        raise missing_key_error("var column (modality_key)", modality_key, adata.var.columns)
    if params.get("pca_components") is not None:
        raise ValueError(
            "pca_components cannot be combined with modality_key=; pass n_pcs= (one number for every modality, "
            "or a mapping such as {'GEX': 50, 'ADT': 0})."
        )
    matrix, names = feature_matrix(adata, spec, lazy=True)
    labels = adata.var[modality_key].to_numpy()
    if mask is not None:
        dropped = sorted(set(map(str, labels[~mask])) - set(map(str, labels[mask])))
        if dropped:
            raise ValueError(
                f"mask_var keeps no feature of modality {', '.join(map(repr, dropped))}; every modality needs at "
                "least one feature. Pass a mask that keeps some of each (e.g. the highly variable genes and all "
                "proteins)."
            )
        matrix, names, labels = matrix[:, np.flatnonzero(mask)], names[mask], labels[mask]
    modalities, codes = modality_codes(labels, f"var[{modality_key!r}]")
    dtype = np.float64 if params.get("dtype") == "float64" else np.float32
    mean = column_stats(matrix if is_dask_array(matrix) else row_chunked(matrix))
    components, info = fit_modalities(
        matrix, mean, modalities, codes, n_pcs=n_pcs, weighting=weighting, emphasis=weights,
        n_neighbors=int(params.get("n_neighbors", 15)), source=f"var:{modality_key}", dtype=dtype,
        random_state=0 if seed is None else int(seed),
    )
    info.preparation = preparation_of(adata.uns.get(spec.layer) if spec.layer else None, info.names)
    params["pca_components"] = None
    return InputChoice(
        matrix, names, spec, params, components=components, projection_source="gbumap_modalities", modalities=info
    )


def _neighbors_graph(
    adata: AnnData, neighbors_key: str, rep: str, n_pcs: int | None, any_rep: bool = False
) -> tuple[sp.csr_matrix, dict]:
    """The connectivities of a ``sc.pp.neighbors`` result, after checking its representation.

    ``any_rep=True`` accepts a graph of another representation (an integrated
    one) as the layout target; the record says so.
    """
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
    if str(their_rep) != rep and not any_rep:
        raise ValueError(
            f"uns[{neighbors_key!r}] was computed on {their_rep!r} but this model trains on {rep!r}; the graph "
            f"would not describe the model's input. Pass use_rep={str(their_rep)!r} (for 'X_pca', gene-level "
            "contributions are recovered from varm['PCs']), drop neighbors_key to build a new graph, or pass "
            "neighbors_any_rep=True to follow this graph (e.g. an integrated one) while the encoder reads genes."
        )
    their_pcs = params.get("n_pcs")
    if their_pcs is not None and n_pcs is not None and int(their_pcs) != int(n_pcs) and not any_rep:
        raise ValueError(
            f"uns[{neighbors_key!r}] used n_pcs={int(their_pcs)} but n_pcs={n_pcs} was requested; use the same number."
        )
    graph = sp.csr_matrix(adata.obsp[conn_key], dtype=np.float32)
    if graph.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(f"obsp[{conn_key!r}] has shape {graph.shape}; expected ({adata.n_obs}, {adata.n_obs}).")
    info = {"neighbors_key": neighbors_key, "connectivities_key": conn_key, "representation": str(their_rep)}
    if any_rep:
        info["other_representation"] = str(str(their_rep) != rep)
    return graph, info


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
    from ._dask import column_stats, is_dask_array, row_chunked

    X = _raw_matrix(adata, InputSpec())[:, genes]
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(adata.n_obs, size=min(_VERIFY_CELLS, adata.n_obs), replace=False))
    lazy = is_dask_array(X)
    mean = column_stats(X if lazy else row_chunked(X))  # the means every fit uses (float64 sums)
    block = X[cells].compute() if lazy else X[cells]
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


