"""Finding the matrix a model is trained on, or explains, inside an AnnData."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._validation import Matrix, as_matrix

__all__ = ["InputSpec", "resolve_input", "missing_key_error", "select_obs", "feature_matrix"]


def missing_key_error(kind: str, key: str, existing) -> KeyError:
    names = sorted(map(str, existing))
    shown = ", ".join(repr(n) for n in names[:30]) or "none"
    more = f" (and {len(names) - 30} more)" if len(names) > 30 else ""
    return KeyError(f"{kind} {key!r} not found. Available {kind} keys: {shown}{more}.")


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
    if adata.isbacked:
        raise ValueError(
            f"adata is in backed mode (X stays on disk in {adata.filename}); gbumap reads X in memory. "
            "Load it first with adata = adata.to_memory(), or read the file without backed=."
        )
    return adata.X


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
) -> tuple[Matrix, np.ndarray]:
    """The input matrix and its feature names, optionally restricted to ``features``.

    For gene-level input ``features`` are gene names looked up in
    ``var_names``; a gene that is missing raises a ``KeyError`` naming it,
    unless ``fill`` gives a constant value for it. ``rows`` restricts the
    result to those cells before any column selection, so that streaming
    callers never copy more than one batch. When ``features`` are all of
    ``var_names`` in order, the matrix is returned without a column copy.
    """
    raw = _raw_matrix(adata, spec)
    if rows is not None:
        raw = raw.iloc[rows] if isinstance(raw, pd.DataFrame) else raw[rows]
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
    constant = sp.csr_matrix(np.broadcast_to(values, (mat.shape[0], len(values))))
    order = np.argsort(np.concatenate([present, np.flatnonzero(absent)]), kind="stable")
    full = sp.hstack([sp.csr_matrix(mat), constant], format="csc")[:, order]
    full = sp.csr_matrix(full) if sp.issparse(mat) else full.toarray()
    return full, features


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

