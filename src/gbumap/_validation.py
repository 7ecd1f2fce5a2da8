"""Input checks shared by the estimator and the AnnData layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["as_matrix", "check_finite", "Matrix"]

Matrix = np.ndarray | sp.csr_matrix


def as_matrix(X: Any, *, name: str = "X", dtype: type = np.float32) -> Matrix:
    """Convert ``X`` to a float dense array or CSR matrix, without copying when possible.

    Accepts NumPy arrays, SciPy sparse matrices/arrays, torch tensors and
    pandas DataFrames. Raises a ``ValueError`` naming the problem for empty,
    non-2-D, non-numeric or non-finite input.
    """
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
    """Raise a ``ValueError`` that counts the NaN and infinite values in ``X``."""
    values = X.data if sp.issparse(X) else X
    if np.isfinite(values).all():
        return
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    raise ValueError(
        f"{name} contains {n_nan} NaN and {n_inf} infinite value(s). Remove or impute them first "
        "(e.g. np.nan_to_num, or filter the affected cells/genes)."
    )
