"""The randomised PCA's tall-skinny QR: the same basis and loadings as one QR, in row-major order."""

from __future__ import annotations

import numpy as np
import pytest

import gbumap._pca as pca


def test_blocked_qr_gives_an_orthonormal_basis_of_the_same_span(monkeypatch):
    monkeypatch.setattr(pca, "QR_SINGLE_MAX_ROWS", 1000)
    monkeypatch.setattr(pca, "QR_BLOCK_ROWS", 300)
    rng = np.random.default_rng(0)
    # ill-conditioned on purpose: column scales over 12 orders of magnitude
    Y = rng.standard_normal((2500, 20)) @ np.diag(np.logspace(0, -12, 20))
    Q = pca._orthonormal_basis(Y)
    assert Q.shape == Y.shape and Q.flags.c_contiguous
    np.testing.assert_allclose(Q.T @ Q, np.eye(20), atol=1e-13)
    single = np.linalg.qr(Y)[0]
    # the same span: each basis is reproduced by projecting it on the other
    assert np.linalg.norm(single - Q @ (Q.T @ single)) < 1e-12
    # below the threshold: one QR, as before
    small = Y[:1000]
    single_small = pca.torch.linalg.qr(pca.torch.from_numpy(small))[0].numpy()
    np.testing.assert_array_equal(pca._orthonormal_basis(small), single_small)


@pytest.mark.parametrize("sparse", [False, True])
def test_blocked_qr_does_not_change_the_loadings(monkeypatch, sparse):
    import scipy.sparse as sp

    from gbumap.datasets import simulate

    X = simulate(3000, 1000, random_state=0).X
    X = X if sparse else X.toarray()
    center = np.asarray(X.mean(axis=0)).ravel()
    before, var_before = pca.randomized_pca(X, 20, center=center)
    monkeypatch.setattr(pca, "QR_SINGLE_MAX_ROWS", 1000)
    monkeypatch.setattr(pca, "QR_BLOCK_ROWS", 700)
    after, var_after = pca.randomized_pca(X, 20, center=center)
    assert sp.issparse(X) == sparse
    np.testing.assert_allclose(after, before, atol=1e-9)
    np.testing.assert_allclose(var_after, var_before, rtol=1e-10)
