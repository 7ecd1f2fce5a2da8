"""Homogeneous encoders, their exact Jacobians, and refusal of encoders that break exactness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _bilinear import Bilinear
from torch import nn

from gbumap import GlassBoxUMAP
from gbumap._encoder import HomogeneousMLP, NotHomogeneousError, _autograd_jacobian, check_homogeneous


@pytest.mark.parametrize("activation", ["leaky_relu", "prelu", "relu"])
def test_masked_product_jacobian_matches_autograd(activation):
    torch.manual_seed(0)
    model = HomogeneousMLP(30, 2, hidden=(64, 32), activation=activation, input_scale=0.3).double()
    if activation == "prelu":
        with torch.no_grad():
            for s in model.slopes:
                s.uniform_(0.05, 0.4)
    z = torch.randn(500, 30, dtype=torch.float64)
    fast = model.jacobian(z)
    slow = _autograd_jacobian(model, z)
    assert fast.shape == (500, 2, 30)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    # Euler: f(z) = J(z) z
    torch.testing.assert_close(torch.einsum("ndg,ng->nd", fast, z), model(z), rtol=1e-10, atol=1e-12)


def test_default_encoder_passes_check():
    z = torch.randn(200, 10)
    check_homogeneous(HomogeneousMLP(10, 2), z)


@pytest.mark.parametrize(
    "module, why",
    [
        (nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 2)), "bias"),
        (nn.Sequential(nn.Linear(13, 16, bias=False), nn.GELU(), nn.Linear(16, 2, bias=False)), "gelu"),
        (nn.Sequential(nn.Linear(13, 16, bias=False), nn.LayerNorm(16), nn.Linear(16, 2, bias=False)), "layernorm"),
        (nn.Sequential(nn.Linear(13, 16, bias=False), nn.Tanh(), nn.Linear(16, 2, bias=False)), "tanh"),
    ],
)
def test_non_homogeneous_encoder_is_refused(wine_std, module, why):
    X, _ = wine_std
    with pytest.raises(NotHomogeneousError, match="not positively homogeneous|J\\(x\\)"):
        GlassBoxUMAP(encoder=module, n_steps=5, batch_size=256).fit(X)


def test_custom_homogeneous_encoder_is_accepted_and_exact(wine_std):
    X, _ = wine_std
    module = nn.Sequential(
        nn.Linear(13, 32, bias=False), nn.ReLU(), nn.Linear(32, 32, bias=False), nn.LeakyReLU(0.2),
        nn.Linear(32, 2, bias=False),
    )
    model = GlassBoxUMAP(encoder=module, n_steps=30, batch_size=512).fit(X)
    emb = model.transform(X)
    contrib = model.compute_contributions(X)
    assert np.abs(contrib.sum(-1) - emb).max() / np.abs(emb).max() < 1e-5
    # the user's module is not trained in place
    assert model.encoder_ is not module


def test_degree_two_encoder(wine_std):
    X, _ = wine_std
    with pytest.raises(NotHomogeneousError):
        GlassBoxUMAP(encoder=Bilinear(13), n_steps=5, batch_size=256).fit(X)
    model = GlassBoxUMAP(encoder=Bilinear(13), homogeneity_degree=2, n_steps=30, batch_size=512, dtype="float64")
    model.fit(X)
    emb = model.transform(X)
    contrib = model.compute_contributions(X)
    assert np.abs(contrib.sum(-1) - emb).max() / np.abs(emb).max() < 1e-12
