"""The UMAP neighbour graph from a kNN result: fuzzy simplicial set and the a/b curve.

The fuzzy set follows UMAP (McInnes et al. 2018): each cell's distances are
shifted by the distance to its nearest neighbour (``rho``) and scaled by a
bandwidth ``sigma`` chosen so that the memberships sum to ``log2(k)``; the
directed graph is symmetrised by the probabilistic union. Here the bandwidth
search runs vectorised over all cells at once in NumPy, so building the graph
needs no numba compilation; ``tests/test_graph.py`` checks it against
umap-learn's ``fuzzy_simplicial_set``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._knn import nearest_neighbors

__all__ = ["find_ab_params", "fuzzy_simplicial_set", "nearest_neighbors", "graph_from_knn"]

_SMOOTH_K_TOLERANCE = 1e-5
_MIN_K_DIST_SCALE = 1e-3


def find_ab_params(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """Fit ``a`` and ``b`` of ``1 / (1 + a·d^(2b))`` to UMAP's target curve.

    The target is 1 up to ``min_dist`` and ``exp(-(d - min_dist) / spread)``
    beyond it, sampled on ``[0, 3·spread]``.
    """
    from scipy.optimize import curve_fit

    if spread <= 0 or min_dist < 0 or min_dist > spread:
        raise ValueError(
            f"Need spread > 0 and 0 <= min_dist <= spread; got spread={spread}, min_dist={min_dist}."
        )

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    (a, b), _ = curve_fit(curve, xv, yv)
    return float(a), float(b)


def _smooth_knn_dist(dists: np.ndarray, k: int, n_iter: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell ``sigma`` and ``rho`` (local connectivity 1), vectorised bisection."""
    dists = dists.astype(np.float64)
    target = np.log2(k)
    positive = np.where(dists > 0, dists, np.inf)
    rho = positive.min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    rest = dists[:, 1:]
    shifted = rest - rho[:, None]
    lo = np.zeros(len(dists))
    hi = np.full(len(dists), np.inf)
    mid = np.ones(len(dists))
    active = np.ones(len(dists), dtype=bool)
    for _ in range(n_iter):
        with np.errstate(over="ignore"):
            psum = np.where(shifted > 0, np.exp(-shifted / mid[:, None]), 1.0).sum(axis=1)
        done = np.abs(psum - target) < _SMOOTH_K_TOLERANCE
        active &= ~done
        if not active.any():
            break
        too_big = active & (psum > target)
        too_small = active & (psum <= target)
        hi[too_big] = mid[too_big]
        mid[too_big] = (lo[too_big] + hi[too_big]) / 2.0
        lo[too_small] = mid[too_small]
        grow = too_small & ~np.isfinite(hi)
        mid[grow] = mid[grow] * 2
        settle = too_small & np.isfinite(hi)
        mid[settle] = (lo[settle] + hi[settle]) / 2.0
    mean_row = dists.mean(axis=1)
    floor = np.where(rho > 0, _MIN_K_DIST_SCALE * mean_row, _MIN_K_DIST_SCALE * dists.mean())
    sigma = np.maximum(mid, floor)
    return sigma, rho


def fuzzy_simplicial_set(knn_indices: np.ndarray, knn_dists: np.ndarray, n_cells: int) -> sp.csr_matrix:
    """UMAP's symmetric fuzzy graph from a kNN result (self as first neighbour)."""
    k = knn_indices.shape[1]
    sigma, rho = _smooth_knn_dist(knn_dists, k)
    shifted = knn_dists.astype(np.float64) - rho[:, None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # np.where evaluates both branches
        vals = np.where(shifted <= 0, 1.0, np.exp(-shifted / sigma[:, None]))
    rows = np.repeat(np.arange(knn_indices.shape[0]), k)
    cols = knn_indices.ravel()
    vals = vals.ravel()
    keep = (cols != rows) & (cols >= 0)
    directed = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n_cells, n_cells))
    transpose = directed.T.tocsr()
    prod = directed.multiply(transpose)
    graph = (directed + transpose - prod).tocsr()
    graph.eliminate_zeros()
    return graph.astype(np.float32)


def graph_from_knn(knn_indices: np.ndarray, knn_dists: np.ndarray) -> sp.csr_matrix:
    """Fuzzy graph for a precomputed kNN result."""
    return fuzzy_simplicial_set(knn_indices, knn_dists, knn_indices.shape[0])
