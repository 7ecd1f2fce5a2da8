"""The scikit-learn style estimator: API, quality against umap-learn, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from gbumap import GlassBoxUMAP


def knn_preservation(high, low, k=15):
    from sklearn.neighbors import NearestNeighbors

    hi = NearestNeighbors(n_neighbors=k + 1).fit(high).kneighbors(return_distance=False)
    lo = NearestNeighbors(n_neighbors=k + 1).fit(low).kneighbors(return_distance=False)
    return float(np.mean([len(set(a) & set(b)) / (k + 1) for a, b in zip(hi, lo)]))


def label_knn_accuracy(emb, y):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(15), emb, y, cv=5).mean())


def test_sklearn_api():
    model = GlassBoxUMAP(n_neighbors=10, min_dist=0.3)
    params = model.get_params()
    assert params["n_neighbors"] == 10 and params["min_dist"] == 0.3
    model.set_params(n_neighbors=20)
    assert model.n_neighbors == 20
    twin = clone(model)
    assert twin is not model and twin.get_params() == model.get_params()
    assert "GlassBoxUMAP(" in repr(model)


@pytest.mark.slow
def test_quality_against_umap_learn_on_digits(digits):
    """Same data, same run: label kNN accuracy and kNN preservation beside umap-learn's."""
    import umap

    X, y = digits
    ours = GlassBoxUMAP(random_state=0).fit_transform(X)
    theirs = umap.UMAP(random_state=0).fit_transform(X)
    acc_ours, acc_theirs = label_knn_accuracy(ours, y), label_knn_accuracy(theirs, y)
    pres_ours, pres_theirs = knn_preservation(X, ours), knn_preservation(X, theirs)
    print(f"digits: accuracy {acc_ours:.4f} vs umap {acc_theirs:.4f}; "
          f"preservation {pres_ours:.4f} vs {pres_theirs:.4f}")
    assert acc_ours >= acc_theirs - 0.03
    assert pres_ours >= pres_theirs - 0.05


def test_transform_matches_fit_embedding(digits):
    X, _ = digits
    model = GlassBoxUMAP(n_steps=40, batch_size=1024)
    emb = model.fit_transform(X)
    np.testing.assert_allclose(model.transform(X), emb, rtol=1e-5, atol=1e-5)
    assert emb.shape == (X.shape[0], 2) and emb.dtype == np.float32
    assert len(model.loss_history_) == 40 and np.isfinite(model.loss_history_).all()
    assert model.loss_history_[-10:].mean() < model.loss_history_[:10].mean()


def test_same_seed_same_result(digits):
    X, _ = digits
    a = GlassBoxUMAP(n_steps=30, batch_size=512, random_state=3).fit(X)
    b = GlassBoxUMAP(n_steps=30, batch_size=512, random_state=3).fit(X)
    c = GlassBoxUMAP(n_steps=30, batch_size=512, random_state=4).fit(X)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    np.testing.assert_array_equal(a.compute_contributions(X[:50]), b.compute_contributions(X[:50]))
    assert not np.array_equal(a.embedding_, c.embedding_)


def test_three_components(wine_std):
    X, _ = wine_std
    model = GlassBoxUMAP(n_components=3, n_steps=30, batch_size=512).fit(X)
    contrib = model.compute_contributions(X)
    assert contrib.shape == (len(X), 3, X.shape[1])
    assert np.abs(contrib.sum(-1) - model.embedding_).max() < 1e-5 * np.abs(model.embedding_).max()


def test_precomputed_graph_and_knn(digits):
    from gbumap._graph import fuzzy_simplicial_set, nearest_neighbors

    X, _ = digits
    X = X[:400]
    idx, dist = nearest_neighbors(X, 15)
    a = GlassBoxUMAP(n_steps=20, batch_size=512).fit(X, knn=(idx, dist))
    b = GlassBoxUMAP(n_steps=20, batch_size=512).fit(X, graph=fuzzy_simplicial_set(idx, dist, 400))
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert abs(a.graph_ - b.graph_).max() == 0


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(n_neighbors=1), "n_neighbors"),
        (dict(min_dist=-1.0), "min_dist"),
        (dict(spread=0.0), "spread"),
        (dict(baseline="median"), "baseline"),
        (dict(dtype="float16"), "dtype"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(n_steps=0), "n_steps"),
        (dict(pca_components=0), "pca_components"),
        (dict(accelerator="tpu"), "accelerator"),
        (dict(n_components=0), "n_components"),
    ],
)
def test_invalid_parameters(wine_std, params, message):
    X, _ = wine_std
    with pytest.raises(ValueError, match=message):
        GlassBoxUMAP(**params).fit(X)


def test_errors_before_fit_and_on_wrong_features(wine_std):
    X, _ = wine_std
    from sklearn.exceptions import NotFittedError

    model = GlassBoxUMAP()
    for call in (model.transform, model.input_jacobian, model.compute_contributions, model.reconstruction_error):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(X)
    model.set_params(n_steps=5, batch_size=128).fit(X)
    with pytest.raises(ValueError, match="13"):
        model.transform(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        model.transform(np.where(np.eye(len(X), 13, dtype=bool), np.nan, X))
    with pytest.raises(ValueError, match="Too few cells"):
        GlassBoxUMAP().fit(X[:10])


def test_the_model_step_by_step_is_transform_and_its_jacobian(wine_std):
    """encode → apply_encoder is transform; scaled_input is encode's scaling; jacobian_at is the encoder's J."""
    X, _ = wine_std
    model = GlassBoxUMAP(n_steps=20, batch_size=256, random_state=0).fit(X)
    u = model.encode(X)
    emb = model.apply_encoder(u)
    np.testing.assert_array_equal(emb, model.transform(X))
    z = X.astype(np.float64) - model.baseline_  # no PCA: the offset from the baseline itself
    u_again, s = model.scaled_input(z)
    np.testing.assert_array_equal(u_again, u)
    np.testing.assert_array_equal(s, model.input_divisor(z))
    np.testing.assert_allclose(model.input_divisor_from_norm2((z**2).sum(axis=1, keepdims=True)), s, rtol=1e-12)
    assert s.shape == (len(X), 1) and not np.allclose(s, 1.0)  # "soft" scaling: a real per-cell divisor
    jac = model.jacobian_at(u)
    assert jac.shape == (len(X), 2, X.shape[1]) and jac.dtype == np.float32
    euler = np.einsum("ndk,nk->nd", jac.astype(np.float64), u.astype(np.float64))
    np.testing.assert_allclose(euler, emb, rtol=0, atol=1e-5 * np.abs(emb).max())  # J(u)·u = f(u)
    np.testing.assert_array_equal(model.input_jacobian(X), jac / s[:, :, None].astype(np.float32))


def test_fit_shares_a_given_projection_and_trains_only_the_encoder(wine_std):
    X, _ = wine_std
    params = dict(n_steps=20, batch_size=256, pca_components=5)
    ref = GlassBoxUMAP(**params, random_state=0).fit(X)
    half = X[::2]
    run = GlassBoxUMAP(**params, random_state=1).fit(half, projection=ref)
    own = GlassBoxUMAP(**params, random_state=1).fit(half)
    np.testing.assert_array_equal(run.baseline_, ref.baseline_)  # not the subset's mean
    assert not np.array_equal(own.baseline_, ref.baseline_)
    np.testing.assert_array_equal(run.components_, ref.components_)
    assert run.input_norm_offset_ == ref.input_norm_offset_ != own.input_norm_offset_
    assert run.correction_ is None and not np.array_equal(run.embedding_, ref.transform(half))
    np.testing.assert_allclose(run.transform(half), run.embedding_, rtol=0, atol=1e-5 * np.abs(run.embedding_).max())
    graph = GlassBoxUMAP(**params, random_state=1).neighbor_graph(half, projection=ref)
    assert graph.shape == (len(half), len(half)) and abs(graph - run.graph_).max() == 0
    builder = GlassBoxUMAP(**params, random_state=1)
    by_loadings = builder.neighbor_graph(half, components=ref.components_)
    assert not hasattr(builder, "components_")  # the estimator itself is left unfitted
    np.testing.assert_array_equal(
        by_loadings.toarray(),
        GlassBoxUMAP(**params, random_state=1).fit(half, components=ref.components_).graph_.toarray(),
    )
    with pytest.raises(ValueError, match="not both"):
        GlassBoxUMAP(**params).fit(half, projection=ref, components=ref.components_)
    with pytest.raises(ValueError, match="13"):
        GlassBoxUMAP(**params).fit(half[:, :5], projection=ref)
    with pytest.raises(TypeError, match="projection must be a fitted GlassBoxUMAP"):
        GlassBoxUMAP(**params).fit(half, projection=ref.components_)


def test_lightning_engine_gives_the_same_model(wine_std):
    """Lightning Fabric drives the same loop: identical result to plain PyTorch on the CPU."""
    X, _ = wine_std
    plain = GlassBoxUMAP(n_steps=25, batch_size=256, engine="torch").fit(X)
    fabric = GlassBoxUMAP(n_steps=25, batch_size=256, engine="lightning").fit(X)
    np.testing.assert_array_equal(plain.embedding_, fabric.embedding_)
    assert fabric.reconstruction_error(X)["max_rel"] < 1e-5
    assert GlassBoxUMAP()._resolve_engine(__import__("torch").device("cpu")) == "torch"
