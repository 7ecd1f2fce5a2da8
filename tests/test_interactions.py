"""The built-in bilinear encoder and its exact gene–gene interaction modules."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap._encoder import BilinearEncoder, encoder_jacobian
from gbumap._registry import RegistryError


@pytest.fixture(scope="module")
def bilinear_session(pbmc_log_raw):
    adata = pbmc_log_raw.copy()
    gbumap.tl.glassbox_umap(adata, encoder="bilinear", n_steps=120, verbose=False)
    return adata


@pytest.fixture
def bilinear(bilinear_session):
    return bilinear_session.copy()


def test_encoder_is_a_quadratic_form_with_an_exact_jacobian():
    torch.manual_seed(0)
    enc = BilinearEncoder(7, 2, rank=5, input_scale=0.7).double()
    z = torch.randn(30, 7, dtype=torch.float64)
    with torch.no_grad():
        forms = enc.quadratic_forms()
        out = enc(z)
        assert torch.allclose(forms, forms.transpose(1, 2))
        np.testing.assert_allclose(out, torch.einsum("nk,dkl,nl->nd", z, forms, z), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(enc(3 * z), 9 * out, rtol=1e-12)  # homogeneous of degree 2
    autograd = torch.func.vmap(torch.func.jacrev(enc))(z).detach()
    np.testing.assert_allclose(encoder_jacobian(enc, z), autograd, atol=1e-12)


def test_bilinear_contributions_are_exact_and_survive_h5ad(bilinear, tmp_path):
    model = gbumap.get.model(bilinear)
    assert isinstance(model.encoder_, BilinearEncoder) and model.homogeneity_degree_ == 2
    assert gbumap.get.reconstruction_error(bilinear)["max_rel"] < 1e-5
    bilinear.write_h5ad(tmp_path / "b.h5ad")
    back = ad.read_h5ad(tmp_path / "b.h5ad")
    again = gbumap.get.model(back)
    assert again.encoder == "bilinear" and again.get_params()["encoder"] == "bilinear"
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5
    np.testing.assert_allclose(again.transform(back.X[:40]), back.obsm["X_gbumap"][:40], atol=1e-4)


def test_bilinear_without_pca_and_in_float64(wine_std):
    X, _ = wine_std
    model = gbumap.GlassBoxUMAP(encoder="bilinear", hidden_layers=(16,), n_steps=60, dtype="float64", random_state=0)
    emb = model.fit_transform(X)
    contrib = model.compute_contributions(X)
    assert np.abs(contrib.sum(-1) - emb).max() / np.abs(emb).max() < 1e-10


def test_damaged_bilinear_weights_are_refused(bilinear):
    state = bilinear.uns["gbumap"]["encoder"]["state"]
    state["left__weight"] = state["left__weight"][:, :-1]
    with pytest.raises(RegistryError):
        gbumap.get.model(bilinear)


def test_module_terms_sum_exactly_to_each_axis_and_loadings_are_folded_back(bilinear):
    gbumap.tl.interaction_modules(bilinear, 4)
    result = bilinear.uns["modules_gbumap"]
    for axis in ("axis_1", "axis_2"):
        assert result["reconstruction_gap"][axis] < 1e-10
    model = gbumap.get.model(bilinear)
    forms = model.encoder_.quadratic_forms().detach().double().numpy()
    inputs = model.encode(bilinear.X).astype(np.float64)
    emb = bilinear.obsm["X_gbumap"].astype(np.float64)
    # independent: the eigen-decomposition of Q_1 rebuilds axis 1 of the stored embedding (float32 model)
    values, vectors = np.linalg.eigh(forms[0])
    rebuilt = ((inputs @ vectors) ** 2 * values).sum(axis=1)
    assert np.abs(rebuilt - emb[:, 0]).max() < 1e-5 * np.abs(emb).max()

    loadings = result["axis_1"]["loadings"]
    assert list(loadings.index) == list(bilinear.var_names) and loadings.shape == (bilinear.n_vars, 4)
    gram = loadings.to_numpy().T @ loadings.to_numpy()
    np.testing.assert_allclose(gram, np.eye(4), atol=1e-5)  # Pᵀv of orthonormal v through orthonormal loadings
    # each stored module is an eigenvector of the genes × genes matrix Pᵀ Q_1 P, with its eigenvalue
    P = model.components_.astype(np.float64)
    gene_matrix = P.T @ forms[0] @ P
    for k, value in enumerate(result["axis_1"]["eigenvalues"]):
        v = loadings.iloc[:, k].to_numpy()
        np.testing.assert_allclose(gene_matrix @ v, value * v, atol=1e-6 * abs(values).max())
    # cell terms: λ (v·u)², via the genes: a = Pᵀv·(x − b)/s
    x = bilinear.X.toarray() if hasattr(bilinear.X, "toarray") else np.asarray(bilinear.X)
    divisor = model.input_divisor((x - model.baseline_) @ P.T)
    activity = ((x - model.baseline_) @ loadings.iloc[:, 0].to_numpy()) / divisor[:, 0]
    np.testing.assert_allclose(
        bilinear.obsm["modules_gbumap_axis_1"][:, 0],
        result["axis_1"]["eigenvalues"][0] * activity**2,
        rtol=1e-3,
        atol=1e-4,
    )
    # modules ranked by their mean absolute term
    assert (np.diff(result["axis_1"]["mean_term"]) <= 1e-12).all()


def test_l2_view_is_rotation_free_and_its_scores_square_to_the_jacobian_norm(bilinear):
    gbumap.tl.interaction_modules(bilinear, 50)
    model = gbumap.get.model(bilinear)
    forms = model.encoder_.quadratic_forms().detach().double().numpy()
    inputs = model.encode(bilinear.X).astype(np.float64)
    scores = bilinear.obsm["modules_gbumap_l2"].astype(np.float64)
    expected = (np.einsum("dkl,nl->ndk", forms, inputs) ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose((scores**2).sum(1), expected, rtol=1e-4)
    # a rotated and mirrored map (Q'_e = Σ_d R_ed Q_d) has the same l2 modules
    from gbumap.tl._interactions import module_views

    angle = 1.1
    R = np.array([[np.cos(angle), np.sin(angle)], [np.sin(angle), -np.cos(angle)]])
    turned = module_views(np.einsum("ed,dkl->ekl", R, forms))["l2"]
    original = module_views(forms)["l2"]
    np.testing.assert_allclose(turned[0], original[0], rtol=1e-8, atol=1e-8 * original[0].max())
    top = np.argsort(-original[0])[:3]
    overlap = np.abs(np.sum(turned[1][:, top] * original[1][:, top], axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_results_round_trip_and_plot(bilinear, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    gbumap.tl.interaction_modules(bilinear, 3, key_added="mods")
    bilinear.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    pd.testing.assert_frame_equal(back.uns["mods"]["l2"]["loadings"], bilinear.uns["mods"]["l2"]["loadings"])
    before = snapshot(back)
    axes = gbumap.pl.interaction_modules(back, 2, key="mods", n_genes=5, show=False)
    assert_unchanged(back, before)
    assert len(axes) == 4
    top = back.uns["mods"]["l2"]["loadings"]["module_1"].abs().nlargest(5).index
    assert {t.get_text() for t in axes[2].get_yticklabels()} == set(top)
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda a: gbumap.tl.interaction_modules(a, 0), ValueError, "n_modules"),
        (lambda a: gbumap.tl.interaction_modules(a, 51), ValueError, "from 1 to 50"),
        (lambda a: gbumap.tl.interaction_modules(a, 2.5), ValueError, "n_modules"),
        (lambda a: gbumap.pl.interaction_modules(a), KeyError, "tl.interaction_modules"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(bilinear, call, error, message):
    before = snapshot(bilinear)
    with pytest.raises(error) as info:
        call(bilinear)
    assert message in str(info.value)
    assert_unchanged(bilinear, before)


def test_a_piecewise_linear_model_has_no_modules(pbmc_fitted):
    before = snapshot(pbmc_fitted)
    with pytest.raises(ValueError, match="encoder='bilinear'"):
        gbumap.tl.interaction_modules(pbmc_fitted)
    assert_unchanged(pbmc_fitted, before)


def test_unknown_encoder_name_is_refused():
    with pytest.raises(ValueError, match="'bilinear'"):
        gbumap.GlassBoxUMAP(encoder="quadratic").fit(np.random.default_rng(0).normal(size=(40, 5)))
