"""MuData in, MuData out: every public tool, reader and plot accepts a MuData.

A MuData (``mudata``, scverse's multimodal container) holds one AnnData per
modality. gbumap reads it as one *joint* AnnData: the modalities' features
side by side (``X``, or a layer of each), ``var["modality"]`` naming each
feature's modality, and the MuData's own ``obs``, ``obsm``, ``obsp`` and
``uns`` (so a WNN graph from ``muon.pp.neighbors`` is there to follow). The
function runs on that view, and what it wrote goes back into the MuData:
``obsm``, ``obsp``, ``uns`` and ``obs`` entries as they are, per-feature
layers split by modality into each modality's ``layers``.

Every modality must hold the same cells in the same order as the MuData
(``muon.pp.intersect_obs`` makes it so).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

__all__ = ["MODALITY_COLUMN", "accepts_mudata", "is_mudata", "joint_anndata"]

#: The ``var`` column of the joint AnnData naming each feature's modality.
MODALITY_COLUMN = "modality"


class _NO:
    default = None


def is_mudata(obj: Any) -> bool:
    """Whether ``obj`` is a MuData (checked without importing ``mudata``)."""
    return type(obj).__name__ == "MuData" and hasattr(obj, "mod")


def joint_anndata(
    mdata, modalities: list[str] | None = None, layers: Mapping[str, str | None] | None = None
) -> AnnData:
    """The joint AnnData of a MuData's modalities (features side by side), sharing its ``obs*`` and ``uns``.

    ``layers`` gives the layer read in each modality (``None``: its ``X``).
    """
    names = list(mdata.mod) if modalities is None else list(modalities)
    unknown = [n for n in names if n not in mdata.mod]
    if unknown:
        raise KeyError(f"The MuData has no modality {unknown}; it has {list(mdata.mod)}.")
    if len(names) < 2:
        raise ValueError(
            f"The MuData holds {len(names)} modality ({', '.join(names)}); pass its AnnData "
            f"(mdata.mod[{names[0]!r}]) instead." if names else "The MuData holds no modality."
        )
    layers = dict(layers or {})
    blocks, var_names, labels = [], [], []
    for name in names:
        mod = mdata.mod[name]
        if mod.n_obs != mdata.n_obs or not mod.obs_names.equals(mdata.obs_names):
            raise ValueError(
                f"Modality {name!r} holds {mod.n_obs:,} cells, not the MuData's {mdata.n_obs:,} in the same order; "
                "keep the cells every modality measured first (muon.pp.intersect_obs(mdata))."
            )
        layer = layers.get(name)
        if layer is None:
            blocks.append(mod.X)
        elif layer not in mod.layers:
            raise KeyError(f"Modality {name!r} has no layer {layer!r}; its layers are {list(mod.layers)}.")
        else:
            blocks.append(mod.layers[layer])
        var_names.extend(mod.var_names.astype(str))
        labels.extend([name] * mod.n_vars)
    index = pd.Index(var_names)
    if index.has_duplicates:
        dups = index[index.duplicated()].unique()
        raise ValueError(
            f"{len(dups)} feature name(s) occur in several modalities ({', '.join(map(str, dups[:5]))}); features are "
            "matched by name, so make them unique first (mdata.var_names_make_unique())."
        )
    if any(sp.issparse(b) for b in blocks):
        X = sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr")
    else:
        X = np.hstack([np.asarray(b) for b in blocks])
    var = pd.DataFrame({MODALITY_COLUMN: pd.Categorical(labels, categories=names)}, index=index)
    joint = AnnData(X=X, obs=mdata.obs, var=var, obsm=dict(mdata.obsm), obsp=dict(mdata.obsp))
    for k, v in mdata.uns.items():
        joint.uns[k] = v
    return joint


def _model_modalities(mdata, key: str | None) -> tuple[list[str] | None, dict[str, str | None]]:
    """The modalities and layers a stored model read (``uns[key]["modalities"]``), else all and ``X``."""
    reg = mdata.uns.get(key) if key is not None else None
    info = reg.get("modalities") if isinstance(reg, Mapping) else None
    if not isinstance(info, Mapping):
        return None, {}
    names = [str(n) for n in np.asarray(info["names"])]
    stored = [str(v) for v in np.asarray(info.get("layers", [""] * len(names)))]
    return names, {n: (layer or None) for n, layer in zip(names, stored)}


def _snapshot(adata: AnnData) -> dict[str, dict[str, int]]:
    return {
        "obsm": {k: id(v) for k, v in adata.obsm.items()},
        "obsp": {k: id(v) for k, v in adata.obsp.items()},
        "uns": {k: id(v) for k, v in adata.uns.items()},
        "obs": {k: id(adata.obs[k]) for k in adata.obs.columns},
        "layers": {k: id(v) for k, v in adata.layers.items()},
    }


def _write_back(joint: AnnData, before: dict[str, dict[str, int]], mdata, names: list[str]) -> None:
    """Copy what a call wrote into ``joint`` back into ``mdata`` (layers split by modality)."""
    for attr in ("obsm", "obsp", "uns"):
        source, target = getattr(joint, attr), getattr(mdata, attr)
        for k, v in source.items():
            if before[attr].get(k) != id(v):
                target[k] = v
        for k in set(before[attr]) - set(source.keys()):
            if k in target:
                del target[k]
    for k in joint.obs.columns:
        if k not in before["obs"] or k not in mdata.obs.columns:
            mdata.obs[k] = joint.obs[k].to_numpy()
    modality = joint.var[MODALITY_COLUMN].to_numpy()
    for k, v in joint.layers.items():
        if before["layers"].get(k) == id(v):
            continue
        for name in names:
            cols = np.flatnonzero(modality == name)
            mdata.mod[name].layers[k] = v[:, cols]


def accepts_mudata(func: Callable) -> Callable:
    """Let a public function taking an AnnData first also take a MuData (see the module docstring).

    For a fit (a function with ``key_added`` but no ``key``), every modality is
    used, ``layer=`` names a layer of each modality (one name, or a mapping by
    modality) and ``modality_key`` is set; for every other function, the
    modalities and layers the model under ``key`` read.
    """
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(adata, *args, **kwargs):
        if not is_mudata(adata):
            return func(adata, *args, **kwargs)
        bound = signature.bind_partial(adata, *args, **kwargs)
        fitting = "key_added" in signature.parameters and "key" not in signature.parameters
        if fitting:
            if kwargs.get("modality_key") is not None:
                raise ValueError("A MuData names its modalities itself; drop modality_key=.")
            names = list(adata.mod)
            default = signature.parameters["layer"].default if "layer" in signature.parameters else None
            layer = kwargs.pop("layer", default)
            layers = dict(layer) if isinstance(layer, Mapping) else {n: layer for n in names}
            if "layer" in signature.parameters:
                kwargs["layer"] = None  # the joint AnnData's X is each modality's layer
            kwargs["modality_key"] = MODALITY_COLUMN
        else:
            key = bound.arguments.get("key", signature.parameters.get("key", inspect.Parameter).default)
            names, layers = _model_modalities(adata, key if isinstance(key, str) else None)
            names = names or list(adata.mod)
        copy = bool(kwargs.get("copy", False))
        target = adata.copy() if copy else adata
        if "copy" in signature.parameters:
            kwargs["copy"] = False
        joint = joint_anndata(target, names, layers)
        before = _snapshot(joint)
        result = func(joint, *args, **kwargs)
        _write_back(joint, before, target, names)
        written = target.uns.get(kwargs.get("key_added", signature.parameters.get("key_added", _NO).default))
        if fitting and isinstance(written, Mapping) and "methods" in written:  # a prepared layer: name the source
            used = {layers.get(n) for n in names}
            written["layer"] = "X" if used == {None} else ", ".join(sorted(str(u) for u in used))
        if fitting and isinstance(written, Mapping) and "format_version" in written and "modalities" in written:
            from ._registry import mark_mudata_source

            used = {layers.get(n) for n in names}
            prepared = target.uns.get(next(iter(used))) if len(used) == 1 and None not in used else None
            mark_mudata_source(written, [layers.get(n) for n in names], prepared)
        if copy:
            return target
        return result

    return wrapper
