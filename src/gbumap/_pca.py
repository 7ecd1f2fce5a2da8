"""Randomised PCA with implicit centring, so sparse input is never densified."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["randomized_pca", "to_torch_matrix"]


def to_torch_matrix(X: np.ndarray | sp.spmatrix, dtype: torch.dtype) -> torch.Tensor:
    """A dense or sparse CSR torch tensor sharing the values of ``X``."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(
                torch.from_numpy(X.indptr.astype(np.int64)),
                torch.from_numpy(X.indices.astype(np.int64)),
                torch.from_numpy(np.asarray(X.data)).to(dtype),
                size=X.shape,
                check_invariants=False,
            )
    return torch.from_numpy(np.ascontiguousarray(X)).to(dtype)


def randomized_pca(
    X: np.ndarray | sp.spmatrix,
    n_components: int,
    *,
    center: np.ndarray,
    n_oversamples: int = 10,
    n_iter: int = 4,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top principal axes of ``X - center`` without forming it.

    Halko et al.'s range finder with power iterations; centring enters only
    through rank-one corrections ``A·V - 1·(centerᵀ·V)``.

    Returns
    -------
    components
        ``(n_components, n_features)``, orthonormal rows, sign fixed so the
        largest loading of each axis is positive (deterministic output).
    explained_variance
        Variance along each axis.
    """
    n, g = X.shape
    k = int(n_components)
    if not 0 < k <= min(n, g):
        raise ValueError(f"pca_components must be between 1 and min(n_cells, n_features) = {min(n, g)}, got {k}.")
    dtype = torch.float64 if np.asarray(center).dtype == np.float64 else torch.float32
    A = to_torch_matrix(X, dtype)
    At = to_torch_matrix(sp.csr_matrix(X.T), dtype) if sp.issparse(X) else A.T
    mu = torch.as_tensor(np.asarray(center), dtype=dtype).reshape(-1, 1)

    def right(V: torch.Tensor) -> torch.Tensor:  # (A - 1 muᵀ) V
        return A @ V - (mu.T @ V)

    def left(U: torch.Tensor) -> torch.Tensor:  # (A - 1 muᵀ)ᵀ U
        return At @ U - mu @ U.sum(dim=0, keepdim=True)

    q = min(k + n_oversamples, min(n, g))
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    omega = torch.randn(g, q, generator=gen, dtype=dtype)
    Y = right(omega)
    for _ in range(n_iter):
        Y, _ = torch.linalg.qr(Y)
        Y, _ = torch.linalg.qr(left(Y))
        Y = right(Y)
    Q, _ = torch.linalg.qr(Y)
    B = left(Q).T.to(torch.float64)
    _, S, Vt = torch.linalg.svd(B, full_matrices=False)
    components = Vt[:k].numpy()
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    explained_variance = (S[:k].numpy() ** 2) / max(n - 1, 1)
    return components, explained_variance
