"""The UMAP neighbour graph: kNN search, fuzzy simplicial set, and the a/b curve.

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

__all__ = ["find_ab_params", "fuzzy_simplicial_set", "nearest_neighbors", "graph_from_knn"]

_SMOOTH_K_TOLERANCE = 1e-5
_MIN_K_DIST_SCALE = 1e-3
# Below this many cells an exact search is cheaper than building an index; for the
# euclidean/cosine metrics a blocked matrix-product search stays cheaper than
# pynndescent (whose numba JIT alone costs tens of seconds per fresh process)
# up to about 100k cells.
EXACT_KNN_MAX_CELLS = 4096
EXACT_MATMUL_KNN_MAX_CELLS = 100_000
_MATMUL_METRICS = ("euclidean", "cosine")


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


def _exact_knn(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial.distance import cdist

    n = X.shape[0]
    indices = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=np.float32)
    chunk = max(1, 2**22 // max(n, 1))
    for start in range(0, n, chunk):
        block = cdist(X[start : start + chunk], X, metric=metric)
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = -1.0  # force each cell to be its own first neighbour
        part = np.argpartition(block, kth=min(k, n - 1) - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(block, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        indices[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        dists[start : start + chunk] = np.take_along_axis(part_d, order, axis=1)
    dists[:, 0] = 0.0
    return indices, dists


def _matmul_knn(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN from blocked ``|a|² + |b|² - 2a·b`` products (torch, multithreaded)."""
    import torch

    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    if metric == "cosine":
        data = torch.nn.functional.normalize(data, dim=1)
    n = data.shape[0]
    sq = (data * data).sum(1)
    indices = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=np.float32)
    chunk = max(1, min(n, 2**23 // max(n, 1)))
    with torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            # |b|² - 2a·b ranks neighbours like the squared distance (|a|² is constant per row)
            block = torch.addmm(sq[None, :], data[start:stop], data.T, alpha=-2.0)
            rows = torch.arange(stop - start)
            block[rows, rows + start] = -torch.inf  # each cell is its own first neighbour
            d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
            d = d + sq[start:stop, None]
            indices[start:stop] = i.numpy()
            dists[start:stop] = d.clamp_min_(0).numpy()
    dists = np.sqrt(dists)
    if metric == "cosine":
        dists = dists**2 / 2.0  # 1 - cos from the chord length of unit vectors
    dists[:, 0] = 0.0
    return indices, dists


def nearest_neighbors(
    X: np.ndarray | sp.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    random_state: int | None = 0,
    exact: bool | None = None,
    verbose: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row, itself included as the first.

    Exact search when ``exact=None`` and the input is small (below 4,096
    rows, any metric) or dense, euclidean or cosine and below 100,000 rows
    (a blocked matrix product); pynndescent's approximate search otherwise.

    Returns
    -------
    indices, distances
        Arrays of shape ``(n, n_neighbors)``, sorted by distance.
    """
    n = X.shape[0]
    k = min(n_neighbors, n)
    matmul_ok = metric in _MATMUL_METRICS and not sp.issparse(X)
    if exact is None:
        exact = n <= EXACT_KNN_MAX_CELLS or (matmul_ok and n <= EXACT_MATMUL_KNN_MAX_CELLS)
    if exact:
        if matmul_ok:
            return _matmul_knn(np.asarray(X), k, metric)
        dense = X.toarray() if sp.issparse(X) else np.asarray(X)
        return _exact_knn(dense, k, metric)
    from pynndescent import NNDescent

    n_trees = min(64, 5 + int(round((n**0.5) / 20.0)))
    n_iters = max(5, int(round(np.log2(n))))
    index = NNDescent(
        X,
        n_neighbors=k,
        metric=metric,
        random_state=random_state,
        n_trees=n_trees,
        n_iters=n_iters,
        max_candidates=60,
        low_memory=True,
        verbose=verbose,
        compressed=True,
    )
    indices, dists = index.neighbor_graph
    return indices.astype(np.int64), dists.astype(np.float32)


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
