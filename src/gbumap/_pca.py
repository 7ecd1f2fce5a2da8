"""Randomised PCA with implicit centring, so sparse input is never densified.

The algorithm touches the data only through two products, ``X @ V`` and
``Xᵀ @ U``, both passes over row chunks (:func:`gbumap._dask.row_chunk_products`):
of a Dask array as it comes, of an in-memory matrix cut into chunks of
:data:`gbumap._dask.IN_MEMORY_CHUNK_ROWS` rows (views, no copy). The products and the
range finder run in float64, so the chunking changes the sums only at the
1e-16 level and the loadings, rounded to the model's dtype, do not depend on
whether the data came from memory or from disk.
"""

from __future__ import annotations

import numpy as np
import torch

from ._dask import LARGE_ROWS, is_dask_array, row_chunk_products, row_chunked

__all__ = ["randomized_pca"]


# Above QR_SINGLE_MAX_ROWS rows (atlas scale, as for the passes' blocks), the range finder's QR runs
# on blocks of QR_BLOCK_ROWS rows (a tall-skinny QR). LAPACK's QR of one tall matrix costs more per
# row as it grows, and its Q comes back column-major, so the next pass copied it: QR plus copy took
# 4.1 s for 2M × 60 against 0.3-0.4 s at 300k (2.0 against 1.0-1.3 µs per row; 2 cores), and
# 1.9-2.9 s in blocks. Up to QR_SINGLE_MAX_ROWS the QR is one call as before.
QR_SINGLE_MAX_ROWS = LARGE_ROWS
QR_BLOCK_ROWS = 2**18


def _orthonormal_basis(Y: np.ndarray) -> np.ndarray:
    """An orthonormal basis ``Q`` of the columns of ``Y`` (``n × q``, ``n ≥ q``), from a Householder QR.

    With more than :data:`QR_SINGLE_MAX_ROWS` rows, a tall-skinny QR: a QR of each
    block of rows, a QR of their stacked ``R`` factors, and ``Q`` as each
    block's ``Q`` times its part of the second ``Q``. Both are Householder
    QRs, stable for any conditioning.
    """
    T = torch.from_numpy(Y)
    n, q = Y.shape
    if n <= QR_SINGLE_MAX_ROWS:
        return torch.linalg.qr(T)[0].numpy()
    edges = np.linspace(0, n, -(-n // QR_BLOCK_ROWS) + 1).astype(int)
    factors = [torch.linalg.qr(T[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    Q_top = torch.linalg.qr(torch.cat([R for _, R in factors]))[0]
    out = torch.empty((n, q), dtype=T.dtype)
    for i, ((Q, _), a, b) in enumerate(zip(factors, edges[:-1], edges[1:])):
        torch.matmul(Q, Q_top[i * q : (i + 1) * q], out=out[a:b])  # into place: a concatenation cost 1 s more at 2M
    return out.numpy()


def randomized_pca(
    X,
    n_components: int,
    *,
    center: np.ndarray,
    n_oversamples: int = 10,
    n_iter: int = 4,
    random_state: int | None = 0,
    verbose: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top principal axes of ``X - center`` without forming it.

    Halko et al.'s range finder with power iterations; centring enters only
    through rank-one corrections ``X·V - 1·(centerᵀ·V)``. ``X`` is a NumPy
    array, a SciPy sparse matrix or a Dask array (``2·n_iter + 2`` passes over
    its row chunks).

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
    if not is_dask_array(X):
        X = row_chunked(X)
    times, transpose_times = row_chunk_products(X, verbose)
    dtype = np.float64
    mu = np.asarray(center, dtype=dtype)

    def right(V: np.ndarray) -> np.ndarray:  # (X - 1 muᵀ) V
        V = np.ascontiguousarray(V, dtype=dtype)
        out = times(V)
        out -= mu @ V  # in place: a second cells × q array costs its page faults (1.8 s at 2M cells)
        return out

    def left(U: np.ndarray) -> np.ndarray:  # (X - 1 muᵀ)ᵀ U
        U = np.ascontiguousarray(U, dtype=dtype)
        return transpose_times(U) - np.outer(mu, U.sum(axis=0))

    def orthonormal(Y: np.ndarray) -> np.ndarray:
        return _orthonormal_basis(np.ascontiguousarray(Y))

    q = min(k + n_oversamples, min(n, g))
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    omega = torch.randn(g, q, generator=gen, dtype=torch.float64).numpy()
    Y = right(omega)
    for _ in range(n_iter):
        Y = right(orthonormal(left(orthonormal(Y))))
    Q = orthonormal(Y)
    B = left(Q).T.astype(np.float64)
    _, S, Vt = np.linalg.svd(B, full_matrices=False)
    components = Vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    explained_variance = (S[:k] ** 2) / max(n - 1, 1)
    return components, explained_variance
