"""Input checks shared by the estimator and the AnnData layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["as_matrix", "check_finite", "check_batch_size", "looks_like_counts", "Matrix"]

Matrix = np.ndarray | sp.csr_matrix  # or, where documented, a Dask array of either (gbumap._dask)


def as_matrix(X: Any, *, name: str = "X", dtype: type = np.float32) -> Matrix:
    """Convert ``X`` to a float dense array or CSR matrix, without copying when possible.

    Accepts NumPy arrays, SciPy sparse matrices/arrays, torch tensors and
    pandas DataFrames. Raises a ``ValueError`` naming the problem for empty,
    non-2-D, non-numeric or non-finite input. A Dask array stays lazy: it is
    checked by :func:`gbumap._dask.check_dask_matrix`, and its values by the
    passes that read it.
    """
    from ._dask import check_dask_matrix, is_dask_array

    if is_dask_array(X):
        return check_dask_matrix(X, name=name, dtype=dtype)
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor
        X = X.detach().cpu()
        X = X.to_dense().numpy() if X.layout != _torch_strided() else X.numpy()
    elif hasattr(X, "to_numpy") and not sp.issparse(X):  # pandas
        X = X.to_numpy()
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if X.dtype != dtype:
            X = X.astype(dtype)
    else:
        X = np.asarray(X)
        if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"{name} must be numeric; got dtype {X.dtype}.")
        if X.dtype != dtype:
            X = X.astype(dtype)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells × features); got {X.ndim} dimension(s).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}. Provide at least one cell and one feature.")
    check_finite(X, name=name)
    return X


def _torch_strided():
    import torch

    return torch.strided


def check_finite(X: Matrix, *, name: str = "X") -> None:
    """Raise a ``ValueError`` that counts the NaN and infinite values in ``X``.

    The check runs over blocks of about 4M values, so its temporary memory
    does not grow with the size of ``X``.
    """
    values = X.data if sp.issparse(X) else X
    if _all_finite(values):
        return
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    raise ValueError(
        f"{name} contains {n_nan} NaN and {n_inf} infinite value(s). Remove or impute them first "
        "(e.g. np.nan_to_num, or filter the affected cells/genes)."
    )


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """Return ``batch_size`` as an ``int`` after checking it is a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{name} must be a positive integer; got {batch_size!r}.")
    return int(batch_size)


def looks_like_counts(X: Matrix, *, n_rows: int = 1000, threshold: float = 50.0) -> float | None:
    """Whether ``X`` looks like raw counts: integer-valued with a maximum above ``threshold``.

    Only a sample of evenly spaced rows (at most ``n_rows``) is read, so the
    check costs next to nothing on large data. Returns the largest sampled
    value when the sample looks like counts, else ``None``. Negative values are
    not a sign of counts (scaled data are negative by design) and are ignored.
    """
    from ._dask import is_dask_array

    n = X.shape[0]
    if is_dask_array(X):  # evenly spaced rows would read every chunk: take the leading rows
        block = X[: min(n, n_rows)].compute()
    else:
        block = X[np.unique(np.linspace(0, n - 1, num=min(n, n_rows)).astype(np.int64))]
    values = block.data if sp.issparse(block) else np.asarray(block).ravel()
    if values.size == 0:
        return None
    top = float(values.max())
    if top <= threshold or not np.array_equal(values, np.round(values)):
        return None
    return top


_FINITE_BLOCK = 1 << 22


def _all_finite(values: np.ndarray) -> bool:
    if values.dtype.kind in "biu":
        return True
    if values.size <= _FINITE_BLOCK:
        return bool(np.isfinite(values).all())
    if values.ndim == 1:
        step = _FINITE_BLOCK
    else:
        step = max(1, _FINITE_BLOCK // max(int(np.prod(values.shape[1:])), 1))
    return all(np.isfinite(values[i : i + step]).all() for i in range(0, values.shape[0], step))
