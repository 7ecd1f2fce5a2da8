"""Claims of the docs that had no test: IG/DeepLIFT, degree k, query fill, CLI options, reloads."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from _bilinear import Bilinear
from torch import nn

import gbumap
from gbumap import GlassBoxUMAP
from gbumap._registry import RegistryError
from gbumap.cli import main


def _full_map(model: GlassBoxUMAP, divisor: torch.Tensor | None = None):
    """x ↦ f(ẑ) in torch float64; ``divisor`` holds the input scaling's s constant (else it follows x)."""
    P = torch.from_numpy(np.asarray(model.components_, dtype=np.float64))
    b = torch.from_numpy(model.baseline_)
    c = model.input_norm_offset_

    def f(x: torch.Tensor) -> torch.Tensor:
        z = (x - b) @ P.T
        if c is not None:
            s = divisor if divisor is not None else torch.sqrt((z * z).sum(1, keepdim=True) + c**2)
            z = z / s
        return model.encoder_(z)

    return f


def _integrated_gradients(f, x: torch.Tensor, b: torch.Tensor, n_points: int = 32) -> torch.Tensor:
    """Midpoint Riemann sum of ∫ ∂f/∂x along b → x, times (x − b): (cells, axes, genes)."""
    total = torch.zeros(x.shape[0], 2, x.shape[1], dtype=x.dtype)
    for t in (np.arange(n_points) + 0.5) / n_points:
        point = (b + t * (x - b)).detach().requires_grad_(True)
        out = f(point)
        for d in range(2):
            (grad,) = torch.autograd.grad(out[:, d].sum(), point, retain_graph=d == 0)
            total[:, d] += grad
    return total / n_points * (x - b)[:, None, :]


@pytest.fixture(scope="module")
def digits64(digits):
    return digits[0][:60].astype(np.float64), digits[0]


def test_contributions_equal_integrated_gradients_without_input_scaling(digits64):
    cells, X = digits64
    model = GlassBoxUMAP(input_norm="none", pca_components=20, dtype="float64", n_steps=60, random_state=0).fit(X)
    x, b = torch.from_numpy(cells), torch.from_numpy(model.baseline_)
    ig = _integrated_gradients(_full_map(model), x, b).numpy()
    contrib = model.compute_contributions(cells)
    err = np.abs(ig - contrib).max() / np.abs(contrib).max()
    assert err < 1e-12, f"IG (32-point Riemann sum) vs contributions: relative {err:.1e}"


def test_with_input_scaling_ig_holds_at_the_scaled_input(digits64):
    """docs/method.md: C is IG of ẑ ↦ f(ẑ) with the divisor held; the whole model's IG is another split."""
    cells, X = digits64
    model = GlassBoxUMAP(input_norm="soft", pca_components=20, dtype="float64", n_steps=60, random_state=0).fit(X)
    x, b = torch.from_numpy(cells), torch.from_numpy(model.baseline_)
    z = (cells - model.baseline_) @ model.components_.T
    s = torch.from_numpy(np.sqrt((z**2).sum(1, keepdims=True) + model.input_norm_offset_**2))
    contrib = model.compute_contributions(cells)
    held = _integrated_gradients(_full_map(model, divisor=s), x, b).numpy()
    assert np.abs(held - contrib).max() / np.abs(contrib).max() < 1e-12
    whole = _integrated_gradients(_full_map(model), x, b, n_points=256).numpy()
    emb = model.transform(cells)
    assert np.abs(whole.sum(-1) - emb).max() / np.abs(emb).max() < 1e-3  # completeness, up to the Riemann sum
    assert np.abs(whole - contrib).max() / np.abs(contrib).max() > 1e-3  # but not the same split


def test_deeplift_rescale_equals_contributions(digits64):
    """DeepLIFT (rescale rule, all-zero reference in the encoder's input) multiplies out to C."""
    cells, X = digits64
    model = GlassBoxUMAP(input_norm="none", dtype="float64", n_steps=60, random_state=0).fit(X)
    enc = model.encoder_
    z = torch.from_numpy(cells - model.baseline_)
    h = z * enc.input_scale
    multipliers = []
    for i, lin in enumerate(enc.linears[:-1]):
        pre = lin(h)
        out = enc._activate(i, pre)
        multipliers.append(torch.where(pre != 0, out / pre, torch.zeros_like(pre)))  # Δoutput / Δinput from 0
        h = out
    m = enc.linears[-1].weight.unsqueeze(0).expand(len(cells), -1, -1)
    for lin, mult in zip(reversed(enc.linears[:-1]), reversed(multipliers)):
        m = (m * mult.unsqueeze(1)) @ lin.weight
    deeplift = (m * enc.input_scale * z[:, None, :]).detach().numpy()
    contrib = model.compute_contributions(cells)
    assert np.abs(deeplift - contrib).max() / np.abs(contrib).max() < 1e-12


@pytest.mark.parametrize("input_norm", ["none", "soft"])
def test_degree_k_rule_is_jacobian_times_input_over_k(wine_std, input_norm):
    X, _ = wine_std
    X = X.astype(np.float64)
    model = GlassBoxUMAP(encoder=Bilinear(13), homogeneity_degree=2, input_norm=input_norm, n_steps=30,
                         batch_size=256, dtype="float64", random_state=0).fit(X)
    zhat = torch.from_numpy(model.encode(X))
    divisor = model.input_divisor(X - model.baseline_)
    jac = torch.autograd.functional.jacobian(lambda u: model.encoder_(u).sum(0), zhat).permute(1, 0, 2).numpy()
    expected = jac / divisor[:, :, None] * (X - model.baseline_)[:, None, :] / 2  # C = J ⊙ x / k
    contrib = model.compute_contributions(X)
    np.testing.assert_allclose(contrib, expected, rtol=1e-9, atol=1e-12)
    emb = model.transform(X)
    assert np.abs(contrib.sum(-1) - emb).max() / np.abs(emb).max() < 1e-12


# ---------------------------------------------------------------- queries
def _query(pbmc_fitted, drop: list[str]):
    """The first 40 cells as a fresh query: no gbumap results, without the ``drop`` genes."""
    query = pbmc_fitted[:40].copy()
    for key in ("X_gbumap", "gbumap_jacobian"):
        del query.obsm[key]
    for key in [k for k in query.uns if "gbumap" in k]:
        del query.uns[key]
    del query.layers["gbumap_l2"]
    return query[:, [g for g in query.var_names if g not in drop]].copy()


def test_fill_missing_zero_equals_a_query_with_those_genes_at_zero(pbmc_fitted):
    genes = list(np.asarray(pbmc_fitted.uns["gbumap"]["feature_names"])[:5])
    partial = gbumap.tl.transform(_query(pbmc_fitted, genes), pbmc_fitted, fill_missing="zero", copy=True)
    explicit = _query(pbmc_fitted, [])
    dense = explicit.X.toarray() if hasattr(explicit.X, "toarray") else explicit.X.copy()
    dense[:, explicit.var_names.get_indexer(genes)] = 0.0
    explicit.X = dense
    gbumap.tl.transform(explicit, pbmc_fitted)
    # float32 products over a filled sparse block and a dense one sum in different orders: equal to float32
    # rounding of the map's scale (both are exact maps of the same input)
    scale = float(np.abs(explicit.obsm["X_gbumap"]).max())
    np.testing.assert_allclose(partial.obsm["X_gbumap"], explicit.obsm["X_gbumap"], rtol=1e-5, atol=1e-6 * scale)
    query_reg = partial.uns["gbumap"]["query"]
    assert query_reg["fill_missing"] == "zero" and list(query_reg["missing_genes"]) == genes
    assert np.all(np.asarray(query_reg["fill_values"]) == 0.0)
    c = gbumap.get.contributions(partial, genes=genes)  # J · (0 − baseline): exact, and non-zero
    assert np.abs(c).max() > 0 and gbumap.get.reconstruction_error(partial)["max_rel"] < 1e-5


def test_transform_without_contributions_into_a_copy(pbmc_fitted):
    query = _query(pbmc_fitted, [])
    out = gbumap.tl.transform(query, pbmc_fitted, contributions=False, copy=True)
    assert out is not query and "X_gbumap" in out.obsm and "gbumap_jacobian" not in out.obsm
    assert "X_gbumap" not in query.obsm and "gbumap" not in query.uns
    np.testing.assert_allclose(out.obsm["X_gbumap"], pbmc_fitted.obsm["X_gbumap"][:40], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- reloads
@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_prelu_and_relu_models_round_trip(tmp_path, pbmc_log_raw, activation):
    adata = pbmc_log_raw.copy()
    gbumap.tl.glassbox_umap(adata, activation=activation, n_steps=60, verbose=False)
    path = tmp_path / f"{activation}.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    model, fitted = gbumap.get.model(back), gbumap.get.model(adata)
    assert model.encoder_.activation == activation
    for (name, a), (_, b) in zip(model.encoder_.state_dict().items(), fitted.encoder_.state_dict().items()):
        assert torch.equal(a, b), name
    genes = np.asarray(back.uns["gbumap"]["feature_names"]).astype(str)
    np.testing.assert_allclose(model.transform(back[:, genes].X), back.obsm["X_gbumap"], rtol=1e-5, atol=1e-6)
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5


class Custom(nn.Module):
    def __init__(self, n_in: int = 50) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 24, bias=False), nn.LeakyReLU(0.2), nn.Linear(24, 2, bias=False))

    def forward(self, z):
        return self.net(z)


def test_custom_encoder_reloads_with_encoder_argument(tmp_path, pbmc_log_raw):
    adata = pbmc_log_raw.copy()
    gbumap.tl.fit(adata, encoder=Custom(), n_steps=40, verbose=False)
    path = tmp_path / "custom.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    with pytest.raises(RegistryError, match="custom encoder"):
        gbumap.get.model(back)
    model = gbumap.get.model(back, encoder=Custom())
    genes = np.asarray(back.uns["gbumap"]["feature_names"]).astype(str)
    np.testing.assert_allclose(model.transform(back[:, genes].X), back.obsm["X_gbumap"], rtol=1e-5, atol=1e-6)
    with pytest.raises(RegistryError, match="encoder/state"):
        gbumap.get.model(back, encoder=Custom(n_in=49))


# ---------------------------------------------------------------- command line
def test_cli_options_reach_the_model(tmp_path, pbmc_log_raw, capsys):
    import scanpy as sc

    adata = pbmc_log_raw.copy()
    sc.pp.pca(adata, n_comps=30)
    sc.pp.neighbors(adata, use_rep="X_pca", n_neighbors=12, key_added="nb")
    src = tmp_path / "in.h5ad"
    adata.write_h5ad(src)
    dst = tmp_path / "out.h5ad"
    argv = ["fit", str(src), "-o", str(dst), "--baseline", "zero", "--use-rep", "X_pca", "--neighbors-key", "nb",
            "--top-genes", "4", "--n-steps", "30", "--key-added", "m", "--quiet"]
    assert main(argv) == 0
    back = ad.read_h5ad(dst)
    reg = back.uns["m"]
    assert reg["params"]["baseline"] == "zero"
    assert reg["input"]["source"] == "X" and reg["projection"]["source"] == "scanpy:X_pca"
    assert reg["neighbors"]["source"] == "scanpy" and reg["neighbors"]["neighbors_key"] == "nb"
    assert back.layers["m_l2"].getnnz(axis=1).tolist() == [4] * back.n_obs
    assert "reconstruction error" in capsys.readouterr().out
