"""tl.perturb, tl.rank_knockouts and pl.perturbation: in-silico edits re-encoded exactly, and the first order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap._view import model_view
from gbumap.tl._perturb import _shifted_input as shifted_input

GENES = ["LYZ", "CST3"]
GROUP = "CD14+ Monocyte"


def _input(adata, key="gbumap"):
    view = model_view(adata, key)
    X = view.matrix(adata)
    return view, (X.toarray() if sp.issparse(X) else np.array(X))


def _edited(X, idx, edit, baseline):
    """The model's input with the genes edited in plain numpy (``edit`` as passed to tl.perturb)."""
    out = X.copy()
    if "fold_change" in edit:
        f = edit["fold_change"]
        out[:, idx] = np.log1p(f * np.expm1(out[:, idx])) if edit.get("log1p") else f * out[:, idx]
    else:
        value = edit.get("value", 0.0)
        out[:, idx] = baseline[idx] if isinstance(value, str) else value
    return out


def _numpy_forward(encoder, u):
    """The default encoder in float64 numpy: output and every hidden unit's sign (pre-activation > 0)."""
    h = u.astype(np.float64) * float(encoder.input_scale)
    signs = []
    for lin in encoder.linears[:-1]:
        pre = h @ lin.weight.detach().numpy().astype(np.float64).T
        signs.append(pre > 0)
        h = np.where(pre > 0, pre, encoder.negative_slope * pre)
    return h @ encoder.linears[-1].weight.detach().numpy().astype(np.float64).T, np.concatenate(signs, axis=1)


def _scale(adata, key="gbumap"):
    return float(np.abs(adata.obsm[f"X_{key}"]).max())


@pytest.fixture(scope="module")
def plain(pbmc_log_raw):
    """A model without PCA and without input scaling (s = 1), with its Jacobians stored."""
    adata = pbmc_log_raw.copy()
    gbumap.tl.fit(adata, n_pcs=0, input_norm="none", n_steps=60, verbose=False)
    gbumap.tl.contributions(adata, verbose=False)
    return adata


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "edit",
    [
        {"value": 0.0},
        {"value": "baseline"},
        {"value": 1.5},
        {"fold_change": 2.0},
        {"fold_change": 0.5, "log1p": True},
    ],
    ids=["zero", "baseline", "number", "fold", "fold-log1p"],
)
def test_exact_displacement_is_the_model_run_on_edited_expression(pbmc_fitted, edit):
    adata = pbmc_fitted
    view, X = _input(adata)
    est = view.estimator
    idx = view.feature_indices(GENES)
    gbumap.tl.perturb(adata, GENES, **edit)
    expected = est.transform(_edited(X, idx, edit, est.baseline_)).astype(np.float64) - est.transform(X)
    got = adata.obsm["perturb_gbumap"]
    assert got.shape == (adata.n_obs, est.n_components)
    err = np.abs(got - expected).max() / _scale(adata)
    assert err < 1e-5, f"{edit}: exact displacement differs from transform by a relative {err:.1e}"
    assert np.abs(expected).max() > 1e-2 * _scale(adata)  # the edit moves cells: the test means something
    # cells whose input the edit leaves alone do not move at all
    unchanged = (_edited(X, idx, edit, est.baseline_)[:, idx] == X[:, idx]).all(axis=1)
    assert (got[unchanged] == 0).all()


def test_per_gene_and_per_cell_values_and_subsets(pbmc_fitted):
    adata = pbmc_fitted
    view, X = _input(adata)
    est = view.estimator
    idx = view.feature_indices(GENES)
    cells = np.flatnonzero(adata.obs["bulk_labels"] == GROUP)
    rng = np.random.default_rng(0)
    per_cell = rng.uniform(0, 4, size=(len(cells), len(GENES)))
    gbumap.tl.perturb(adata, GENES, per_cell, obs=cells, key_added="cells")
    edited = X[cells].copy()
    edited[:, idx] = per_cell.astype(np.float32)
    expected = est.transform(edited).astype(np.float64) - est.transform(X[cells])
    got = adata.obsm["cells"]
    assert np.abs(got[cells] - expected).max() < 1e-5 * _scale(adata)
    outside = np.setdiff1d(np.arange(adata.n_obs), cells)
    assert np.isnan(got[outside]).all() and np.isnan(adata.obsm["cells_first_order"][outside]).all()
    assert np.isnan(adata.obs["cells_deviation"].to_numpy()[outside]).all()

    gbumap.tl.perturb(adata, GENES, np.array([1.0, 2.0]), key_added="genes")
    edited = X.copy()
    edited[:, idx] = [1.0, 2.0]
    expected = est.transform(edited).astype(np.float64) - est.transform(X)
    assert np.abs(adata.obsm["genes"] - expected).max() < 1e-5 * _scale(adata)
    np.testing.assert_array_equal(adata.uns["genes"]["values"], [1.0, 2.0])


def test_baseline_means_the_models_baseline(pbmc_fitted):
    adata = pbmc_fitted
    view, X = _input(adata)
    idx = view.feature_indices(GENES)
    baseline = view.estimator.baseline_[idx]
    assert not np.allclose(baseline, 0)  # mean baseline: "baseline" and 0 differ
    gbumap.tl.perturb(adata, GENES, "baseline", key_added="b")
    gbumap.tl.perturb(adata, GENES, baseline, key_added="v")
    np.testing.assert_array_equal(adata.obsm["b"], adata.obsm["v"])
    np.testing.assert_allclose(adata.uns["b"]["values"], baseline)


def test_fold_change_zero_is_a_knock_out_and_log1p_acts_on_counts(pbmc_fitted):
    adata = pbmc_fitted
    gbumap.tl.perturb(adata, GENES, fold_change=0.0, key_added="f0")
    gbumap.tl.perturb(adata, GENES, 0.0, key_added="k0")
    np.testing.assert_array_equal(adata.obsm["f0"], adata.obsm["k0"])
    # a fold change of 1 changes nothing, on either scale
    for log1p in (False, True):
        with pytest.warns(UserWarning, match="unchanged"):
            gbumap.tl.perturb(adata, GENES, fold_change=1.0, log1p=log1p, key_added="f1")
        assert (adata.obsm["f1"] == 0).all()
    # doubling counts is not doubling log values
    gbumap.tl.perturb(adata, GENES, fold_change=2.0, log1p=True, key_added="c2")
    gbumap.tl.perturb(adata, GENES, fold_change=2.0, key_added="l2")
    assert np.abs(adata.obsm["c2"] - adata.obsm["l2"]).max() > 1e-3 * _scale(adata)


def test_z_update_equals_a_full_pca_recompute(pbmc_fitted):
    view, X = _input(pbmc_fitted)
    est = view.estimator
    idx = view.feature_indices(["LYZ", "CST3", "HLA-DRA"])
    edited = X.copy()
    edited[:, idx] = [0.0, 5.0, 1.0]
    z = est._offset_projection(X, slice(None))
    full = est._offset_projection(edited, slice(None))
    fast = shifted_input(est, z, idx, edited[:, idx].astype(np.float64) - X[:, idx])
    assert est.components_ is not None
    err = np.abs(fast - full).max() / np.abs(full).max()
    assert err < 1e-5, f"z' = z + P_g·Δx differs from P·(x' − b) by a relative {err:.1e}"
    assert np.abs(full - z).max() > 0.1 * np.abs(z).max()


# ---------------------------------------------------------------------- the first order
def test_first_order_is_exact_without_activation_flips(pbmc_fitted):
    """J(u)·(u' − u) = the exact move where no unit flips; its decomposition; agreement and flips, counted apart."""
    adata = pbmc_fitted
    view, X = _input(adata)
    est = view.estimator
    gene = ["LYZ"]
    idx = view.feature_indices(gene)
    gbumap.tl.perturb(adata, gene, fold_change=0.9, groupby="bulk_labels")
    result = adata.uns["perturb_gbumap"]
    edited = _edited(X, idx, {"fold_change": 0.9}, est.baseline_)
    changed = (edited[:, idx] != X[:, idx]).any(axis=1)
    scale = _scale(adata)

    # independent first order: Σ_g (J/s')·P_g·Δx_g + f(u)·(s/s' − 1), from the stored J/s and a full recompute
    z, z_new = est._offset_projection(X, slice(None)), est._offset_projection(edited, slice(None))
    s, s_new = est.input_divisor(z), est.input_divisor(z_new)
    stored = np.asarray(adata.obsm["gbumap_jacobian"], dtype=np.float64)  # J(u)/s
    step = est.components_[:, idx].astype(np.float64) @ (edited[:, idx] - X[:, idx]).T.astype(np.float64)
    f_u = est.transform(X).astype(np.float64)
    per_gene = np.einsum("ndk,kn->nd", stored * (s / s_new)[:, :, None], step)
    predicted = per_gene + f_u * (s / s_new - 1)
    np.testing.assert_allclose(adata.obsm["perturb_gbumap_first_order"], predicted, rtol=0, atol=1e-5 * scale)

    # flips of hidden units, counted in float64 numpy
    u, u_new = (z / s).astype(np.float32), (z_new / s_new).astype(np.float32)
    out, signs = _numpy_forward(est.encoder_, u)
    _, signs_new = _numpy_forward(est.encoder_, u_new)
    flips = (signs != signs_new).sum(axis=1)
    ours = adata.obs["perturb_gbumap_flips"].to_numpy()
    assert (ours == flips).mean() > 0.99
    clean = changed & (flips == 0)
    assert clean.sum() > 50 and (changed & (flips > 0)).sum() > 50  # both kinds of cells are present

    exact = est.transform(edited).astype(np.float64) - f_u
    gap = np.abs(exact - predicted).max(axis=1)
    assert gap[clean].max() <= 1e-5 * scale, f"no flip, yet first order off by {gap[clean].max() / scale:.1e}"
    assert gap[changed & (flips > 0)].max() > 1e-4 * scale  # flips do matter somewhere (10× the exactness bound)
    # agreement: the fraction of changed cells within 1e-4 × max|embedding|
    agree = np.linalg.norm(exact - predicted, axis=1)[changed] <= 1e-4 * scale
    assert abs(result["agreement"] - agree.mean()) <= 1.5 / changed.sum()
    assert result["n_changed"] == changed.sum()
    assert result["flip_fraction"] == pytest.approx((ours[changed] > 0).mean())
    assert result["tolerance"] == pytest.approx(1e-4 * scale)
    dev = adata.obs["perturb_gbumap_deviation"].to_numpy()
    gaps = adata.obsm["perturb_gbumap"] - adata.obsm["perturb_gbumap_first_order"]
    np.testing.assert_allclose(dev, np.linalg.norm(gaps, axis=1))
    assert result["max_deviation"] == pytest.approx(dev.max())

    # per-group summaries are means of the per-cell moves
    table = result["groups"]
    inside = (adata.obs["bulk_labels"] == GROUP).to_numpy()
    mean = adata.obsm["perturb_gbumap"][inside].mean(axis=0)
    np.testing.assert_allclose(table.loc[GROUP, ["mean_displacement_1", "mean_displacement_2"]].to_numpy(float), mean)
    assert table.loc[GROUP, "length_of_mean"] == pytest.approx(np.linalg.norm(mean))
    lengths = np.linalg.norm(adata.obsm["perturb_gbumap"][inside], axis=1)
    assert table.loc[GROUP, "mean_length"] == pytest.approx(lengths.mean())
    assert table["n_cells"].sum() == adata.n_obs


def test_without_input_scaling_first_order_is_minus_the_contributions(plain):
    adata = plain.copy()
    view, X = _input(adata)
    est = view.estimator
    assert est.components_ is None and est.input_norm_offset_ is None
    idx = view.feature_indices(GENES)
    gbumap.tl.perturb(adata, GENES, "baseline")
    contrib = gbumap.get.contributions(adata, GENES).astype(np.float64).sum(axis=-1)  # cells × axes
    scale = _scale(adata)
    np.testing.assert_allclose(adata.obsm["perturb_gbumap_first_order"], -contrib, rtol=0, atol=1e-5 * scale)
    exact = est.transform(_edited(X, idx, {"value": "baseline"}, est.baseline_)).astype(np.float64) - est.transform(X)
    np.testing.assert_allclose(adata.obsm["perturb_gbumap"], exact, rtol=0, atol=1e-5 * scale)
    flips = adata.obs["perturb_gbumap_flips"].to_numpy()
    clean = flips == 0
    assert clean.sum() > 20
    assert np.abs(exact[clean] + contrib[clean]).max() <= 1e-5 * scale


def test_stale_or_missing_jacobians_are_recomputed(pbmc_fitted):
    """Stored J/s is reused only where Euler's identity J(u)·u = f(u) holds for the current input."""
    adata = pbmc_fitted
    gbumap.tl.perturb(adata, GENES, fold_change=0.9, key_added="ref")
    stored = np.asarray(adata.obsm["gbumap_jacobian"])
    adata.obsm["gbumap_jacobian"] = stored[np.random.default_rng(0).permutation(adata.n_obs)]  # other cells' J
    gbumap.tl.perturb(adata, GENES, fold_change=0.9, key_added="stale")
    del adata.obsm["gbumap_jacobian"]
    gbumap.tl.perturb(adata, GENES, fold_change=0.9, key_added="none")
    tol = 1e-6 * _scale(adata)
    for k in ("stale", "none"):
        np.testing.assert_allclose(adata.obsm[f"{k}_first_order"], adata.obsm["ref_first_order"], rtol=0, atol=tol)
        np.testing.assert_array_equal(adata.obsm[k], adata.obsm["ref"])


def test_edited_values_are_rounded_to_the_input_dtype(pbmc_fitted):
    """The model reads float32 input: float64 values give the same result as the float32 values they round to."""
    values = np.random.default_rng(1).uniform(0, 3, size=(pbmc_fitted.n_obs, 2))
    gbumap.tl.perturb(pbmc_fitted, GENES, values, key_added="f64")
    gbumap.tl.perturb(pbmc_fitted, GENES, values.astype(np.float32), key_added="f32")
    np.testing.assert_array_equal(pbmc_fitted.obsm["f64"], pbmc_fitted.obsm["f32"])
    np.testing.assert_array_equal(pbmc_fitted.obsm["f64_first_order"], pbmc_fitted.obsm["f32_first_order"])


def test_custom_encoders_of_degree_k_reuse_jacobians_through_eulers_identity(wine_std, monkeypatch):
    """A bilinear (degree-2) encoder: J(u)·u = 2·f(u) accepts its stored Jacobians; no flips are counted."""
    from _bilinear import Bilinear

    import gbumap._estimator as estimator_module
    from gbumap import GlassBoxUMAP
    from gbumap.tl._perturb import _encode_pair as encode_pair
    from gbumap.tl._perturb import jacobian_at

    X, _ = wine_std
    est = GlassBoxUMAP(encoder=Bilinear(13), homogeneity_degree=2, n_steps=30, batch_size=512).fit(X)
    z = est._offset_projection(X, slice(None))
    s = est.input_divisor(z)
    u = (z / s).astype(np.float32)
    f_u, f_same, flips = encode_pair(est, u, u)
    assert flips is None and (f_u == f_same).all()
    np.testing.assert_allclose(f_u, est.transform(X), rtol=0, atol=1e-6 * np.abs(f_u).max())
    fresh = jacobian_at(est, None, u, s, f_u, tol=1e-4 * np.abs(f_u).max())
    stored = est.input_jacobian(X)
    calls = []
    real = estimator_module.encoder_jacobian
    monkeypatch.setattr(estimator_module, "encoder_jacobian", lambda *a: calls.append(1) or real(*a))
    reused = jacobian_at(est, stored, u, s, f_u, tol=1e-4 * np.abs(f_u).max())
    assert calls == []  # every stored Jacobian passed J(u)·u = k·f(u) with k = 2
    np.testing.assert_allclose(reused, fresh, rtol=1e-4, atol=1e-6 * np.abs(fresh).max())
    jacobian_at(est, np.zeros_like(stored), u, s, f_u, tol=1e-4 * np.abs(f_u).max())
    assert calls == [1]  # wrong ones are recomputed


def test_batches_do_not_change_the_result(pbmc_fitted):
    gbumap.tl.perturb(pbmc_fitted, GENES, key_added="small", batch_size=37)
    gbumap.tl.perturb(pbmc_fitted, GENES, key_added="large")
    np.testing.assert_allclose(pbmc_fitted.obsm["small"], pbmc_fitted.obsm["large"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- rank_knockouts
def _brute_force_first_order(adata, view, X, cells, gene, value):
    """Mean |J(u)·(u' − u)| over ``cells`` with ``gene`` set to ``value``, from a full recompute of z'."""
    est = view.estimator
    g = view.feature_indices([gene])[0]
    edited = X[cells].copy()
    edited[:, g] = value
    z, z_new = est._offset_projection(X[cells], slice(None)), est._offset_projection(edited, slice(None))
    s, s_new = est.input_divisor(z), est.input_divisor(z_new)
    jac = np.asarray(adata.obsm["gbumap_jacobian"], dtype=np.float64)[cells] * s[:, :, None]
    move = np.einsum("ndk,nk->nd", jac, z_new / s_new - z / s)
    return np.linalg.norm(move, axis=1).mean(), np.linalg.norm(move.mean(axis=0))


def test_rank_knockouts_matches_brute_force_and_re_encoding(pbmc_fitted):
    adata = pbmc_fitted
    view, X = _input(adata)
    est = view.estimator
    gbumap.tl.rank_knockouts(adata, "bulk_labels", groups=[GROUP, "CD19+ B"], n_exact=4, batch_size=50)
    table = gbumap.get.rank_features_df(adata, GROUP, key="rank_knockouts_gbumap")
    assert list(table.columns) == ["names", "scores", "mean_expression", "shift", "exact_scores", "exact_shift"]
    assert (np.diff(table["scores"].to_numpy()) <= 0).all()
    assert table["exact_scores"].iloc[:4].notna().all() and table["exact_scores"].iloc[4:].isna().all()
    cells = np.flatnonzero((adata.obs["bulk_labels"] == GROUP).to_numpy())
    by_gene = table.set_index("names")
    silent = by_gene.index[by_gene["mean_expression"] == 0][0]  # not expressed in the group: knock-out moves nothing
    for gene in [table["names"].iloc[0], table["names"].iloc[40], silent]:
        score, shift = _brute_force_first_order(adata, view, X, cells, gene, 0.0)
        assert by_gene.loc[gene, "scores"] == pytest.approx(score, rel=1e-5, abs=1e-9)
        assert by_gene.loc[gene, "shift"] == pytest.approx(shift, rel=1e-5, abs=1e-9)
    assert by_gene.loc[silent, "scores"] == 0
    # the exact fields: the group's cells re-encoded with each top gene knocked out
    before = est.transform(X[cells]).astype(np.float64)
    for gene in table["names"].iloc[:4]:
        edited = X[cells].copy()
        edited[:, view.feature_indices([gene])[0]] = 0.0
        move = est.transform(edited).astype(np.float64) - before
        assert by_gene.loc[gene, "exact_scores"] == pytest.approx(np.linalg.norm(move, axis=1).mean(), rel=1e-4)
        assert by_gene.loc[gene, "exact_shift"] == pytest.approx(np.linalg.norm(move.mean(axis=0)), rel=1e-4)
    means = X[cells].mean(axis=0)[view.feature_indices(table["names"])]
    np.testing.assert_allclose(by_gene.loc[table["names"], "mean_expression"], means, rtol=1e-6)


def test_rank_knockouts_without_pca_or_scaling_agrees_with_perturb(plain):
    adata = plain.copy()
    gbumap.tl.rank_knockouts(adata, "bulk_labels", groups=GROUP, value="baseline", n_exact=2)
    table = gbumap.get.rank_features_df(adata, GROUP, key="rank_knockouts_gbumap").set_index("names")
    cells = (adata.obs["bulk_labels"] == GROUP).to_numpy()
    for gene in table.index[[0, 1, 30]]:
        gbumap.tl.perturb(adata, gene, "baseline", obs=cells, key_added="one")
        first = np.linalg.norm(adata.obsm["one_first_order"][cells], axis=1).mean()
        assert table.loc[gene, "scores"] == pytest.approx(first, rel=1e-5)
        if np.isfinite(table.loc[gene, "exact_scores"]):
            exact = np.linalg.norm(adata.obsm["one"][cells], axis=1).mean()
            assert table.loc[gene, "exact_scores"] == pytest.approx(exact, rel=1e-5)


# ---------------------------------------------------------------------- storage, copies, bad input
def test_round_trips_through_h5ad_and_zarr(pbmc_fitted, tmp_path):
    import anndata as ad

    adata = pbmc_fitted
    gbumap.tl.perturb(adata, GENES, "baseline", groupby="bulk_labels")
    gbumap.tl.rank_knockouts(adata, "bulk_labels", groups=["CD4+/CD25 T Reg", GROUP], n_exact=2)
    ranked = gbumap.get.rank_features_df(adata, "CD4+/CD25 T Reg", key="rank_knockouts_gbumap")
    adata.write_h5ad(tmp_path / "a.h5ad")
    adata.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        for k in ("perturb_gbumap", "perturb_gbumap_first_order"):
            np.testing.assert_array_equal(back.obsm[k], adata.obsm[k])
        before, after = adata.uns["perturb_gbumap"], back.uns["perturb_gbumap"]
        pd.testing.assert_frame_equal(before["groups"], after["groups"], check_dtype=False)
        assert list(after["genes"]) == GENES and after["params"]["value"] == "baseline"
        for field in ("agreement", "max_deviation", "tolerance", "flip_fraction", "n_changed"):
            assert float(after[field]) == pytest.approx(float(before[field]))
        again = gbumap.get.rank_features_df(back, "CD4+/CD25 T Reg", key="rank_knockouts_gbumap")
        pd.testing.assert_frame_equal(ranked, again, check_dtype=False)
        gbumap.pl.perturbation(back, show=False)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_success_leaves_the_input_data_alone_and_copy_leaves_everything(pbmc_fitted):
    adata = pbmc_fitted
    adata.layers["counts"] = sp.csr_matrix(adata.X)
    before = snapshot(adata)
    gbumap.tl.perturb(adata, GENES, fold_change=3.0, log1p=True)
    gbumap.tl.rank_knockouts(adata, "bulk_labels", groups=GROUP, n_exact=1)
    after = snapshot(adata)
    kept = [k for k in before if not k.endswith(".keys") and k != "obs"]
    assert [k for k in kept if before[k] != after[k]] == []
    assert "perturb_gbumap" in adata.obsm and "rank_knockouts_gbumap" in adata.uns

    fresh = snapshot(adata)
    out = gbumap.tl.perturb(adata, GENES, key_added="copied", copy=True)
    out2 = gbumap.tl.rank_knockouts(adata, "bulk_labels", groups=GROUP, n_exact=0, key_added="copied", copy=True)
    assert_unchanged(adata, fresh)
    assert "copied" in out.obsm and "copied" in out2.uns


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"genes": ["LYZ", "NOPE1", "NOPE2"]}, KeyError, "2 of the 3 genes"),
        ({"genes": []}, ValueError, "empty"),
        ({"genes": ["LYZ", "LYZ"]}, ValueError, "more than once"),
        ({"genes": GENES, "value": np.zeros(3)}, ValueError, "shape (3,)"),
        ({"genes": GENES, "value": np.zeros((5, 2))}, ValueError, "(700, 2)"),
        ({"genes": GENES, "value": "median"}, ValueError, "'baseline'"),
        ({"genes": GENES, "value": np.nan}, ValueError, "finite"),
        ({"genes": GENES, "value": 1.0, "fold_change": 2.0}, ValueError, "not both"),
        ({"genes": GENES, "fold_change": -1.0}, ValueError, "≥ 0"),
        ({"genes": GENES, "log1p": True}, ValueError, "fold_change"),
        ({"genes": GENES, "groupby": "no_column"}, KeyError, "bulk_labels"),
        ({"genes": GENES, "obs": np.zeros(700, bool)}, ValueError, "no cells"),
        ({"genes": GENES, "key": "missing"}, Exception, "missing"),
        ({"genes": GENES, "key_added": "gbumap"}, ValueError, "holds a gbumap model"),
        ({"genes": None}, TypeError, "list of names"),
    ],
)
def test_bad_perturb_input_names_the_problem_and_changes_nothing(pbmc_fitted, kwargs, error, message):
    before = snapshot(pbmc_fitted)
    with pytest.raises(error) as info:
        gbumap.tl.perturb(pbmc_fitted, **kwargs)
    assert message in str(info.value)
    assert_unchanged(pbmc_fitted, before)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"groupby": "no_column"}, KeyError, "bulk_labels"),
        ({"groupby": "bulk_labels", "groups": ["no group"]}, KeyError, GROUP),
        ({"groupby": "bulk_labels", "value": "mean"}, ValueError, "'baseline'"),
        ({"groupby": "bulk_labels", "value": np.zeros(3)}, ValueError, "shape (3,)"),
        ({"groupby": "bulk_labels", "n_exact": -1}, ValueError, "n_exact"),
        ({"groupby": "bulk_labels", "key_added": "gbumap"}, ValueError, "holds a gbumap model"),
    ],
)
def test_bad_rank_knockouts_input_changes_nothing(pbmc_fitted, kwargs, error, message):
    before = snapshot(pbmc_fitted)
    with pytest.raises(error) as info:
        gbumap.tl.rank_knockouts(pbmc_fitted, **kwargs)
    assert message in str(info.value)
    assert_unchanged(pbmc_fitted, before)


# ---------------------------------------------------------------------- the plot
def test_plot_draws_arrows_of_the_displacements_and_writes_nothing(pbmc_fitted):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.quiver import Quiver

    adata = pbmc_fitted
    gbumap.tl.perturb(adata, GENES, groupby="bulk_labels")
    before = snapshot(adata)
    ax = gbumap.pl.perturbation(adata, n_arrows=50, scale=2.0, show=False)
    quivers = [c for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 1 and quivers[0].N == 50
    q = quivers[0]
    picked = np.flatnonzero(np.isfinite(adata.obsm["perturb_gbumap"][:, 0]))
    # each arrow is a moved cell's displacement, drawn at its position, scaled by `scale`
    offsets = np.asarray(q.get_offsets())
    emb = adata.obsm["X_gbumap"]
    rows = [int(np.flatnonzero((emb[:, 0] == x) & (emb[:, 1] == y))[0]) for x, y in offsets]
    np.testing.assert_allclose(np.c_[q.U, q.V], adata.obsm["perturb_gbumap"][rows], rtol=1e-6)
    assert set(rows) <= set(picked) and q.scale == pytest.approx(0.5)
    assert "LYZ, CST3" in ax.get_title() and ax.get_legend() is not None
    ax2 = gbumap.pl.perturbation(adata, first_order=True, color=None, show=False)
    assert "first-order" in ax2.get_title()
    assert_unchanged(adata, before)
    with pytest.raises(KeyError, match="tl.perturb"):
        gbumap.pl.perturbation(adata, key="nothing", show=False)
    plt.close("all")
