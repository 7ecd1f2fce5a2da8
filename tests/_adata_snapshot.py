"""Byte-level fingerprints of an AnnData, to prove a failed call left it unchanged.

``snapshot(adata)`` records every slot (X, layers, obsm, varm, obsp, uns, obs,
var, names, view and backed state) as SHA-256 digests of the raw bytes plus
dtypes and shapes; ``assert_unchanged(adata, before)`` compares a new
snapshot with an old one and names the first slots that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["snapshot", "assert_unchanged"]


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()


def _array_fp(arr: np.ndarray) -> tuple:
    arr = np.asarray(arr)
    if arr.dtype == object:
        return ("object", arr.shape, _digest(repr(arr.tolist()).encode()))
    return (str(arr.dtype), arr.shape, _digest(np.ascontiguousarray(arr).tobytes()))


def _frame_fp(df: pd.DataFrame) -> tuple:
    cols = []
    for name in df.columns:
        col = df[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cols.append(
                (str(name), "category", _array_fp(col.cat.codes.to_numpy()), repr(list(col.cat.categories)))
            )
        else:
            cols.append((str(name), str(col.dtype), _array_fp(col.to_numpy())))
    return (tuple(map(str, df.index)), tuple(cols))


def _value_fp(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return (type(value).__name__, repr(value))
    if sp.issparse(value):
        m = value.tocsr() if value.format not in ("csr", "csc") else value
        return (
            "sparse",
            m.format,
            m.shape,
            _array_fp(m.data),
            _array_fp(m.indices),
            _array_fp(m.indptr),
        )
    if isinstance(value, pd.DataFrame):
        return ("frame", _frame_fp(value))
    if isinstance(value, np.ndarray):
        return ("array", _array_fp(value))
    if isinstance(value, Mapping):
        return ("mapping", tuple((str(k), _value_fp(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_value_fp(v) for v in value))
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # h5py datasets / backed matrices
        return ("backed", tuple(value.shape), str(value.dtype))
    return ("other", type(value).__name__, repr(value))


def snapshot(adata) -> dict:
    """A fingerprint of every slot of ``adata``, compared by :func:`assert_unchanged`."""
    snap: dict[str, Any] = {
        "shape": adata.shape,
        "is_view": adata.is_view,
        "isbacked": adata.isbacked,
        "obs_names": _array_fp(adata.obs_names.to_numpy().astype(str)),
        "var_names": _array_fp(adata.var_names.to_numpy().astype(str)),
        "obs": _frame_fp(adata.obs),
        "var": _frame_fp(adata.var),
    }
    if adata.isbacked:
        path = Path(adata.filename)
        snap["X"] = ("backed file", _digest(path.read_bytes()))
    else:
        snap["X"] = _value_fp(adata.X)
    for slot in ("obsm", "varm", "obsp", "varp", "layers"):
        mapping = getattr(adata, slot)
        snap[f"{slot}.keys"] = tuple(mapping.keys())
        for key in mapping.keys():
            snap[f"{slot}[{key!r}]"] = _value_fp(mapping[key])
    snap["uns.keys"] = tuple(adata.uns.keys())
    for key, value in adata.uns.items():
        snap[f"uns[{key!r}]"] = _value_fp(value)
    return snap


def assert_unchanged(adata, before: dict) -> None:
    """Fail, naming the slots, when ``adata`` no longer matches ``before`` byte for byte."""
    after = snapshot(adata)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"AnnData changed in: {', '.join(changed)}"
