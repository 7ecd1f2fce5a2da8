"""The UMAP graph: our vectorised fuzzy set against umap-learn's, kNN search, a/b fit."""

from __future__ import annotations

import numpy as np
import pytest

from gbumap._graph import find_ab_params, fuzzy_simplicial_set, nearest_neighbors


@pytest.mark.parametrize("spread, min_dist", [(1.0, 0.1), (1.0, 0.5), (2.0, 0.01)])
def test_ab_params_match_umap(spread, min_dist):
    from umap.umap_ import find_ab_params as umap_ab

    a, b = find_ab_params(spread, min_dist)
    ua, ub = umap_ab(spread, min_dist)
    assert a == pytest.approx(ua, rel=1e-4) and b == pytest.approx(ub, rel=1e-4)


def test_fuzzy_set_matches_umap_learn(digits):
    from umap.umap_ import fuzzy_simplicial_set as umap_fss

    X, _ = digits
    X = X[:800]
    idx, dist = nearest_neighbors(X, 15)
    ours = fuzzy_simplicial_set(idx, dist, X.shape[0])
    theirs, _, _ = umap_fss(X, 15, 0, "euclidean", knn_indices=idx, knn_dists=dist)
    theirs = theirs.tocsr()
    assert ours.shape == theirs.shape
    diff = abs(ours - theirs)
    assert diff.max() < 1e-4
    assert ours.nnz == theirs.nnz


def test_exact_knn_matches_brute_force(digits):
    X, _ = digits
    X = X[:600].astype(np.float64)
    idx, dist = nearest_neighbors(X, 10)
    d = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx[:, 0], np.arange(600))
    expected = np.sort(d, axis=1)[:, :10]
    np.testing.assert_allclose(dist[:, 1:], expected[:, 1:], rtol=1e-5, atol=1e-4)


def test_approximate_knn_has_high_recall(digits):
    X, _ = digits
    exact_idx, _ = nearest_neighbors(X, 15, exact=True)
    approx_idx, _ = nearest_neighbors(X, 15, exact=False, random_state=0)
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(exact_idx, approx_idx)])
    assert recall > 0.95


def test_graph_is_symmetric_with_unit_max(digits):
    X, _ = digits
    idx, dist = nearest_neighbors(X[:500], 15)
    g = fuzzy_simplicial_set(idx, dist, 500)
    assert abs(g - g.T).max() < 1e-6
    assert g.max() <= 1.0 + 1e-6 and g.diagonal().max() == 0
