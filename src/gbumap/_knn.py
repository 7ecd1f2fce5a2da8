"""k-nearest-neighbour search for the UMAP graph.

Four searches, picked by size, metric and format:

* exact, blocked ``cdist`` (any metric, small data);
* exact, blocked matrix products ``|a|² + |b|² - 2a·b`` in torch (dense
  euclidean or cosine, up to :data:`EXACT_MATMUL_KNN_MAX_CELLS` cells);
* clustered (inverted-file) search for larger dense euclidean or cosine data:
  k-means cells into lists of about :data:`CLUSTER_SIZE`, search each list's
  cells among the :data:`N_PROBE` lists nearest to it and the lists that are
  second-nearest to most of its cells (at most :data:`MAX_EXTRA_LISTS`). Each
  cell is compared with a bounded number of candidates, so the cost grows
  linearly with the number of cells (the recall slowly falls instead:
  ``benchmarks/knn_scale.py``), and nothing is compiled at run time. From
  :data:`TWO_LEVEL_MIN_LISTS` lists on (about 524k cells), the lists are
  found and cells assigned to them through about √lists coarse groups of
  lists, so no step compares every cell with every list;
* pynndescent for other metrics and sparse input beyond the exact range.

The matrix-product searches exist because pynndescent's numba JIT costs tens
of seconds in every fresh process; ``tests/test_graph.py`` measures the recall
of the clustered search against the exact one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["nearest_neighbors", "EXACT_KNN_MAX_CELLS", "EXACT_MATMUL_KNN_MAX_CELLS"]

EXACT_KNN_MAX_CELLS = 4096
EXACT_MATMUL_KNN_MAX_CELLS = 20_000
CLUSTER_SIZE = 512
N_PROBE = 8
# Besides the N_PROBE lists nearest to a list, the MAX_EXTRA_LISTS lists that are
# second-nearest to most of its cells. Taking every second-nearest list, as before, made the
# candidates per cell grow with the number of lists (45k per cell and 77 lists per list at
# 300k cells): a search quadratic in the number of cells. With the cap a cell meets at most
# (1 + N_PROBE + MAX_EXTRA_LISTS) lists of about CLUSTER_SIZE cells.
MAX_EXTRA_LISTS = 64
# From this many lists on, the lists are found and assigned in two levels (coarse groups of lists):
# comparing every cell with every list costs cells²/CLUSTER_SIZE, 58 s of 370 s at 2M cells.
TWO_LEVEL_MIN_LISTS = 1024
N_GROUPS_PROBED = 4
_KMEANS_ITERATIONS = 10
_KMEANS_SAMPLE_PER_LIST = 40
_MATMUL_METRICS = ("euclidean", "cosine")


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


def _as_tensor(X: np.ndarray, metric: str):
    import torch

    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    if metric == "cosine":
        data = torch.nn.functional.normalize(data, dim=1)
    return data


def _finish(sq_dists: np.ndarray, metric: str) -> np.ndarray:
    """Distances from squared euclidean ones (cosine: ``1 - cos`` of unit vectors)."""
    dists = np.sqrt(np.maximum(sq_dists, 0))
    if metric == "cosine":
        dists = dists**2 / 2.0
    dists[:, 0] = 0.0
    return dists.astype(np.float32)


def _matmul_knn(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN from blocked ``|a|² + |b|² - 2a·b`` products (torch, multithreaded)."""
    import torch

    data = _as_tensor(X, metric)
    n = data.shape[0]
    sq = (data * data).sum(1)
    indices = np.empty((n, k), dtype=np.int64)
    sq_dists = np.empty((n, k), dtype=np.float32)
    chunk = max(1, min(n, 2**23 // max(n, 1)))
    with torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            # |b|² - 2a·b ranks neighbours like the squared distance (|a|² is constant per row)
            block = torch.addmm(sq[None, :], data[start:stop], data.T, alpha=-2.0)
            rows = torch.arange(stop - start)
            block[rows, rows + start] = -torch.inf  # each cell is its own first neighbour
            d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
            indices[start:stop] = i.numpy()
            sq_dists[start:stop] = (d + sq[start:stop, None]).numpy()
    return indices, _finish(sq_dists, metric)


def _nearest_centroids(data, centroids, n_nearest: int, chunk: int = 65_536):
    """Indices of each row's ``n_nearest`` centroids, in blocks of rows."""
    import torch

    c_sq = (centroids * centroids).sum(1)
    out = torch.empty((data.shape[0], n_nearest), dtype=torch.int64)
    for start in range(0, data.shape[0], chunk):
        block = torch.addmm(c_sq[None, :], data[start : start + chunk], centroids.T, alpha=-2.0)
        out[start : start + chunk] = torch.topk(block, n_nearest, dim=1, largest=False).indices
    return out


def _kmeans(data, n_lists: int, generator):
    """Lloyd's k-means on a random sample of rows; returns the centroids."""
    import torch

    n = data.shape[0]
    sample = data[torch.randperm(n, generator=generator)[: min(n, _KMEANS_SAMPLE_PER_LIST * n_lists)]]
    centroids = sample[:n_lists].clone()
    for _ in range(_KMEANS_ITERATIONS):
        assign = _nearest_centroids(sample, centroids, 1)[:, 0]
        counts = torch.bincount(assign, minlength=n_lists)
        sums = torch.zeros_like(centroids).index_add_(0, assign, sample)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
    return centroids


def _two_level_kmeans(data, n_lists: int, generator):
    """Centroids of about ``n_lists`` lists found in two levels, so that no step compares every row with every list.

    k-means of ``G ≈ √n_lists`` coarse centroids on the sample of rows, then,
    within each coarse group, k-means of the group's share of the lists on its
    own sample rows. Returns the list centroids (each group's lists
    contiguous), the coarse centroids and each group's first and last list
    (``G + 1`` bounds).
    """
    import torch

    n = data.shape[0]
    n_groups = max(2, round(n_lists**0.5))
    sample = data[torch.randperm(n, generator=generator)[: min(n, _KMEANS_SAMPLE_PER_LIST * n_lists)]]
    coarse = _kmeans(sample, n_groups, generator)
    group = _nearest_centroids(sample, coarse, 1)[:, 0]
    counts = torch.bincount(group, minlength=n_groups)
    per_group = torch.clamp(torch.round(counts.double() * n_lists / len(sample)).long(), min=1)
    per_group = torch.minimum(per_group, torch.clamp(counts, min=1))
    parts = []
    for g in range(n_groups):
        members = sample[group == g]
        parts.append(_kmeans(members, int(per_group[g]), generator) if len(members) else coarse[g : g + 1].clone())
    bounds = torch.cat([torch.zeros(1, dtype=torch.int64), per_group.cumsum(0)])
    return torch.cat(parts), coarse, bounds


def _two_level_nearest(data, centroids, coarse, group_bounds, n_nearest: int = 2):
    """Each row's ``n_nearest`` lists, among the lists of its :data:`N_GROUPS_PROBED` nearest coarse groups.

    A row is compared with ``G`` coarse centroids and about
    ``N_GROUPS_PROBED · n_lists / G`` lists instead of all ``n_lists``.
    """
    import torch

    n = data.shape[0]
    n_probe = min(N_GROUPS_PROBED, coarse.shape[0])
    near = _nearest_centroids(data, coarse, n_probe).reshape(-1)
    order = torch.argsort(near, stable=True)
    cells = order // n_probe
    bounds = torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(near, minlength=coarse.shape[0]).cumsum(0)])
    best_d = torch.full((n, n_nearest), torch.inf, dtype=data.dtype)
    best_i = torch.zeros((n, n_nearest), dtype=torch.int64)
    c_sq = (centroids * centroids).sum(1)
    for g in range(coarse.shape[0]):
        lo, hi = int(bounds[g]), int(bounds[g + 1])
        first, last = int(group_bounds[g]), int(group_bounds[g + 1])
        if hi == lo:
            continue
        rows = cells[lo:hi]
        block = torch.addmm(c_sq[None, first:last], data[rows], centroids[first:last].T, alpha=-2.0)
        ids = torch.arange(first, last).expand(hi - lo, -1)
        d, pos = torch.topk(torch.cat([best_d[rows], block], 1), n_nearest, dim=1, largest=False, sorted=True)
        best_i[rows] = torch.gather(torch.cat([best_i[rows], ids], 1), 1, pos)
        best_d[rows] = d
    return best_i


def _clustered_knn(
    X: np.ndarray, k: int, metric: str, random_state: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN by searching each k-means list among its neighbouring lists."""
    import torch

    data = _as_tensor(X, metric)
    n = data.shape[0]
    n_lists = max(1, n // CLUSTER_SIZE)
    generator = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    sq = (data * data).sum(1)
    indices = np.empty((n, k), dtype=np.int64)
    sq_dists = np.empty((n, k), dtype=np.float32)
    with torch.no_grad():
        if n_lists >= TWO_LEVEL_MIN_LISTS:
            centroids, coarse, group_bounds = _two_level_kmeans(data, n_lists, generator)
            n_lists = centroids.shape[0]
            two = _two_level_nearest(data, centroids, coarse, group_bounds)
        else:
            centroids = _kmeans(data, n_lists, generator)
            two = _nearest_centroids(data, centroids, min(2, n_lists))
        first = two[:, 0]
        second = two[:, -1]
        order = torch.argsort(first, stable=True)
        bounds = torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(first, minlength=n_lists).cumsum(0)])
        near_lists = _nearest_centroids(centroids, centroids, min(N_PROBE, n_lists))
        # Cells sorted by list, so that a list's candidates are contiguous slices: gathering them
        # row by row from the whole array cost 5× more per candidate at 300k than at 100k cells.
        by_list, sq_by_list = data[order], sq[order]
        for c in range(n_lists):
            lo, hi = int(bounds[c]), int(bounds[c + 1])
            if hi == lo:
                continue
            probe = torch.unique(torch.cat([near_lists[c], _frequent_lists(second[order[lo:hi]], c, n_lists)]))
            spans = [(lo, hi)] + [(int(bounds[p]), int(bounds[p + 1])) for p in probe.tolist() if p != c]
            if sum(b - a for a, b in spans) < k:  # tiny data: every cell is a candidate
                spans = [(lo, hi), (0, lo), (hi, n)]
            d, pos = _search_spans(by_list, sq_by_list, lo, hi, spans, k)
            members = order[lo:hi].numpy()
            indices[members] = order[pos].numpy()
            sq_dists[members] = (d + sq_by_list[lo:hi, None]).numpy()
    return indices, _finish(sq_dists, metric)


def _search_spans(data, sq, lo: int, hi: int, spans: list[tuple[int, int]], k: int):
    """The ``k`` nearest of rows ``lo:hi`` among the rows of ``spans`` (the first span is ``lo:hi`` itself)."""
    import torch

    cand_data = torch.cat([data[a:b] for a, b in spans])
    cand_sq = torch.cat([sq[a:b] for a, b in spans])
    cand_pos = torch.cat([torch.arange(a, b) for a, b in spans])
    block = torch.addmm(cand_sq[None, :], data[lo:hi], cand_data.T, alpha=-2.0)
    own = torch.arange(hi - lo)
    block[own, own] = -torch.inf  # the own list comes first: each cell is its own first neighbour
    d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
    return d, cand_pos[i]


def _frequent_lists(second, own: int, n_lists: int):
    """The (at most MAX_EXTRA_LISTS) lists second-nearest to most of a list's cells."""
    import torch

    counts = torch.bincount(second, minlength=n_lists)
    counts[own] = 0
    top = torch.topk(counts, min(MAX_EXTRA_LISTS, n_lists)).indices
    return top[counts[top] > 0]


def _pynndescent_knn(
    X: np.ndarray | sp.spmatrix, k: int, metric: str, random_state: int | None, verbose: bool
) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    n = X.shape[0]
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

    With ``exact=None``: exact below 4,096 rows (any metric) and, for dense
    euclidean or cosine input, below 20,000 rows; above that the clustered
    search for dense euclidean/cosine input and pynndescent otherwise.
    ``exact=True`` forces an exact search, ``exact=False`` an approximate one.

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
    if matmul_ok and n > 4 * CLUSTER_SIZE:
        return _clustered_knn(np.asarray(X), k, metric, random_state)
    return _pynndescent_knn(X, k, metric, random_state, verbose)
