"""Contributions add up to the embedding: the product's central promise."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gbumap import GlassBoxUMAP

FAST = dict(n_steps=40, batch_size=1024, random_state=0)
# Tolerances match the documented precision: measured relative errors are about 3e-7 in float32 and
# 5e-16 in float64 (README, docs/method.md), so a tenfold regression fails these tests.
TOLERANCES = [("float32", 1e-5), ("float64", 1e-12)]


def _relative_error(model: GlassBoxUMAP, X) -> float:
    emb = model.transform(X).astype(np.float64)
    contrib = model.compute_contributions(X)
    assert contrib.shape == (X.shape[0], model.n_components, X.shape[1])
    return float(np.abs(contrib.sum(-1, dtype=np.float64) - emb).max() / np.abs(emb).max())


@pytest.mark.parametrize("baseline", ["mean", "zero"])
@pytest.mark.parametrize("dtype, tol", TOLERANCES)
def test_wine_exact(wine_std, baseline, dtype, tol):
    X, _ = wine_std
    model = GlassBoxUMAP(baseline=baseline, dtype=dtype, **FAST).fit(X)
    err = _relative_error(model, X)
    assert err < tol, f"wine {baseline}/{dtype}: relative error {err:.1e}"
    assert model.reconstruction_error(X)["max_rel"] < tol


@pytest.mark.parametrize("pca", [None, 20])
@pytest.mark.parametrize("baseline", ["mean", "zero"])
@pytest.mark.parametrize("dtype, tol", TOLERANCES)
def test_digits_exact(digits, pca, baseline, dtype, tol):
    X, _ = digits
    model = GlassBoxUMAP(pca_components=pca, baseline=baseline, dtype=dtype, **FAST).fit(X)
    err = _relative_error(model, X)
    assert err < tol, f"digits pca={pca} {baseline}/{dtype}: relative error {err:.1e}"


@pytest.mark.parametrize("input_norm", ["soft", "none"])
@pytest.mark.parametrize("pca", [None, 50])
@pytest.mark.parametrize("baseline", ["mean", "zero"])
@pytest.mark.parametrize("dtype, tol", TOLERANCES)
def test_pbmc_exact(pbmc_raw, pca, baseline, dtype, tol, input_norm):
    X = pbmc_raw.raw.X  # log-normalised, sparse CSR
    model = GlassBoxUMAP(pca_components=pca, baseline=baseline, dtype=dtype, input_norm=input_norm, **FAST).fit(X)
    err = _relative_error(model, X)
    assert err < tol, f"pbmc pca={pca} {baseline}/{dtype}/{input_norm}: relative error {err:.1e}"


@pytest.mark.parametrize("pca", [None, 30])
def test_zero_baseline_is_as_sparse_as_x(pbmc_raw, pca):
    X = pbmc_raw.raw.X[:, :400]
    model = GlassBoxUMAP(pca_components=pca, baseline="zero", **FAST).fit(X)
    contrib = model.compute_contributions(X)
    zero = (X.toarray() == 0)
    assert zero.mean() > 0.3  # the test is meaningful: many zeros
    assert np.all(contrib[:, 0, :][zero] == 0) and np.all(contrib[:, 1, :][zero] == 0)
    assert np.abs(contrib[:, :, ~zero.all(0)]).max() > 0


def test_mean_baseline_explains_offset_from_average(pbmc_raw):
    X = pbmc_raw.raw.X[:, :300].toarray()
    model = GlassBoxUMAP(baseline="mean", **FAST).fit(X)
    np.testing.assert_allclose(model.baseline_, X.mean(0), rtol=1e-5, atol=1e-6)
    # the average cell sits at the origin: every feature's offset is zero
    average = X.mean(0, keepdims=True)
    assert np.abs(model.transform(average)).max() < 1e-5
    assert np.abs(model.compute_contributions(average)).max() < 1e-5


def test_input_types_agree(pbmc_raw):
    import torch

    X = pbmc_raw.raw.X[:, :200]
    model = GlassBoxUMAP(**FAST).fit(X)
    ref = model.compute_contributions(X)
    for variant in (sp.csc_matrix(X), X.toarray(), torch.from_numpy(X.toarray())):
        np.testing.assert_allclose(model.compute_contributions(variant), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["l2", "normed_l2", 0, 1])
def test_reductions(digits, reduction):
    X, _ = digits
    model = GlassBoxUMAP(**FAST).fit(X[:300])
    full = model.compute_contributions(X[:300])
    red = model.compute_contributions(X[:300], reduction=reduction)
    assert red.shape == (300, X.shape[1])
    if reduction == "l2":
        np.testing.assert_allclose(red, np.sqrt((full**2).sum(1)), rtol=1e-5, atol=1e-7)
    elif reduction == "normed_l2":
        np.testing.assert_allclose(red.sum(1), 1.0, rtol=1e-5)
    else:
        np.testing.assert_array_equal(red, full[:, reduction, :])


def test_batch_size_does_not_change_contributions(digits):
    X, _ = digits
    model = GlassBoxUMAP(**FAST).fit(X[:500])
    a = model.compute_contributions(X[:500], batch_size=7)
    b = model.compute_contributions(X[:500], batch_size=500)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
