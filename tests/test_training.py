"""The training loop's own Adam and one-cycle schedule against torch.optim's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gbumap._optimizer import OneCycleAdam, one_cycle


@pytest.mark.parametrize("total", [2, 7, 100])
def test_schedule_matches_torch_one_cycle(total):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=total, pct_start=0.25)
    for step in range(total):
        lr, beta1 = one_cycle(step, total, 0.01)
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        assert beta1 == pytest.approx(opt.param_groups[0]["betas"][0], rel=1e-12)
        opt.step()
        sched.step()


def test_updates_match_torch_adam():
    """Same parameters after 60 steps on a small regression, float64."""
    torch.manual_seed(0)
    X, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    ours = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()
    theirs.load_state_dict(ours.state_dict())
    n = 60
    opt_ours = OneCycleAdam(ours.parameters(), max_lr=0.05, total_steps=n)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_theirs, max_lr=0.05, total_steps=n, pct_start=0.25)
    for _ in range(n):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            ((model(X) - y) ** 2).mean().backward()
        expected_lr = opt_theirs.param_groups[0]["lr"]
        assert opt_ours.step() == pytest.approx(expected_lr, rel=1e-12)  # step() returns the rate it used
        opt_theirs.step()
        sched.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert opt_ours.n_done == n


def test_training_does_not_import_dynamo():
    """A fresh process fits without importing torch._dynamo (1.5-2.5 s on a small CPU)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from gbumap import GlassBoxUMAP; "
        "X = np.random.default_rng(0).normal(size=(200, 6)).astype('float32'); "
        "GlassBoxUMAP(n_steps=5, n_neighbors=5).fit(X); "
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_negatives_are_drawn_among_heads_and_tails():
    from gbumap._training import sample_negatives

    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_negatives(128, 640, gen) for _ in range(50)]).numpy()
    assert draws.min() == 0 and draws.max() == 127
    counts = np.bincount(draws, minlength=128)
    expected = len(draws) / 128
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 200  # 127 degrees of freedom: p ≈ 1e-4 at 180
    tails = (draws >= 64).mean()
    assert abs(tails - 0.5) < 4 * np.sqrt(0.25 / len(draws))


def test_edges_are_drawn_in_proportion_to_their_weight():
    import scipy.sparse as sp

    from gbumap._training import _edge_tensors, sample_edge_cells

    weights = np.array([0.05, 0.15, 0.3, 0.5])
    graph = sp.csr_matrix((weights, ([0, 1, 2, 3], [1, 2, 3, 0])), shape=(4, 4))
    heads, tails, cdf = _edge_tensors(graph, torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(1)
    n = 20_000
    cells = sample_edge_cells(heads, tails, cdf, n, gen).numpy()
    freq = np.bincount(cells[:n], minlength=4) / n  # heads 0..3 belong to edges 0..3
    np.testing.assert_allclose(freq, weights, atol=4 * np.sqrt(0.25 / n))
    assert np.array_equal(cells[n:], (cells[:n] + 1) % 4)  # each tail follows its head


def test_schedule_follows_the_graph_size_and_keeps_given_values():
    from gbumap._schedule import FULL_BATCH_MAX_CELLS, auto_n_steps, training_schedule

    small = training_schedule(FULL_BATCH_MAX_CELLS)
    large = training_schedule(FULL_BATCH_MAX_CELLS + 1)
    assert small.full_batch and not large.full_batch
    assert small.batch_size > large.batch_size and small.n_steps < large.n_steps
    assert large.n_steps == auto_n_steps(FULL_BATCH_MAX_CELLS + 1)
    # under DDP every process samples its own edge batches
    assert not training_schedule(1_000, devices=2).full_batch
    given = training_schedule(1_000, n_steps=7, batch_size=64, learning_rate=0.5, full_batch=False)
    assert (given.n_steps, given.batch_size, given.learning_rate, given.full_batch) == (7, 64, 0.5, False)
    assert training_schedule(10**6, full_batch=True).n_steps == small.n_steps


@pytest.mark.parametrize("full_batch", [True, False])
def test_a_full_batch_step_embeds_every_cell_and_draws_negatives_among_all(full_batch, monkeypatch):
    import scipy.sparse as sp

    from gbumap import _training
    from gbumap._encoder import HomogeneousMLP
    from gbumap._training import TrainingConfig, train_encoder

    rng = np.random.default_rng(0)
    n, batch = 300, 64
    rows = np.repeat(np.arange(n), 3)
    graph = sp.csr_matrix((rng.uniform(0.1, 1, rows.size), (rows, rng.integers(0, n, rows.size))), shape=(n, n))
    encoder = HomogeneousMLP(5, 2, (8,))
    embedded, pools = [], []
    forward = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda z: (embedded.append(z.shape[0]), forward(z))[1])
    draw = _training.sample_negatives
    monkeypatch.setattr(_training, "sample_negatives", lambda m, c, g: (pools.append((m, c)), draw(m, c, g))[1])
    config = TrainingConfig(n_steps=5, batch_size=batch, negative_sample_rate=3, repulsion_strength=1.0,
                            learning_rate=1e-2, a=1.58, b=0.9, random_state=0, verbose=False, full_batch=full_batch)
    before = [p.detach().clone() for p in encoder.parameters()]
    train_encoder(encoder, torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32)), graph, config)
    rows_per_step = n if full_batch else 2 * batch
    assert embedded == [rows_per_step] * 5
    assert pools == [(rows_per_step, 3 * batch)] * 5
    assert all(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))


def test_full_batch_is_refused_with_several_processes():
    from gbumap import GlassBoxUMAP

    with pytest.raises(ValueError, match="full_batch=True is not supported with devices=2"):
        GlassBoxUMAP(full_batch=True, devices=2, accelerator="cpu")._check_params()
