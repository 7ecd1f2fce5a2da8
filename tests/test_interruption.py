"""Ctrl-C during training, early stopping and opt-in checkpoints."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from _adata_snapshot import assert_unchanged, snapshot
from _two_groups import two_group_adata

import gbumap
import gbumap._training as training

FIT = dict(n_steps=20, batch_size=256, n_neighbors=10, verbose=False)


def _data(n=120, g=30, seed=0) -> ad.AnnData:
    adata = two_group_adata(n, g, n_markers=8, seed=seed)
    adata.uns["note"] = {"kept": np.arange(3)}
    return adata


@pytest.fixture
def interrupt_at_step_3(monkeypatch):
    """Raise KeyboardInterrupt in the loss of the 4th step (after 3 completed optimiser steps)."""
    original = training._umap_step_loss
    calls = {"n": 0}

    def loss(*args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "_umap_step_loss", loss)
    return calls


def test_interrupted_fit_leaves_anndata_unchanged(interrupt_at_step_3):
    adata = _data()
    before = snapshot(adata)
    with pytest.raises(KeyboardInterrupt):
        gbumap.tl.fit(adata, **FIT)
    assert interrupt_at_step_3["n"] == 3
    assert_unchanged(adata, before)


def test_interrupted_glassbox_umap_leaves_anndata_unchanged(interrupt_at_step_3):
    adata = _data()
    before = snapshot(adata)
    with pytest.raises(KeyboardInterrupt):
        gbumap.tl.glassbox_umap(adata, groupby="group", top_genes=5, **FIT)
    assert_unchanged(adata, before)


def test_interrupted_refit_keeps_previous_results(interrupt_at_step_3):
    """An existing model under the same key survives an interrupted refit untouched."""
    adata = _data()
    calls = interrupt_at_step_3
    calls["n"] = -10_000  # let the first fit run to completion
    gbumap.tl.glassbox_umap(adata, groupby="group", **FIT)
    before = snapshot(adata)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        gbumap.tl.glassbox_umap(adata, groupby="group", n_components=3, **FIT)
    assert_unchanged(adata, before)
    assert adata.obsm["X_gbumap"].shape[1] == 2


def test_checkpoint_written_on_interrupt(interrupt_at_step_3, tmp_path):
    X = np.asarray(_data().X)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        gbumap.GlassBoxUMAP(checkpoint_path=path, **FIT).fit(X)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == "gbumap-checkpoint"
    assert ckpt["interrupted"] is True and ckpt["step"] == 3 and ckpt["n_steps"] == FIT["n_steps"]
    assert set(ckpt["state_dict"]) >= {"linears.0.weight"}
    assert ckpt["n_inputs"] == X.shape[1] and ckpt["n_components"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_checkpoint_written_at_end(tmp_path):
    X = np.asarray(_data().X)
    path = tmp_path / "sub" / "final.pt"
    path.parent.mkdir()
    model = gbumap.GlassBoxUMAP(checkpoint_path=str(path), **FIT).fit(X)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["interrupted"] is False and ckpt["step"] == FIT["n_steps"]
    assert model.training_info_["n_steps"] == FIT["n_steps"] and model.training_info_["stopped_early"] is False
    for name, value in model.encoder_.state_dict().items():
        assert torch.equal(ckpt["state_dict"][name], value)
    # the checkpoint path is not part of the stored model
    adata = _data()
    gbumap.tl.fit(adata, checkpoint_path=str(tmp_path / "tl.pt"), **FIT)
    assert (tmp_path / "tl.pt").exists()
    assert "checkpoint_path" not in adata.uns["gbumap"]["params"]


def test_no_checkpoint_no_files(tmp_path, monkeypatch, interrupt_at_step_3):
    """Without checkpoint_path nothing is written anywhere, on success or on interrupt."""
    monkeypatch.chdir(tmp_path)
    X = np.asarray(_data().X)
    with pytest.raises(KeyboardInterrupt):
        gbumap.GlassBoxUMAP(**FIT).fit(X)
    interrupt_at_step_3["n"] = -10_000
    gbumap.GlassBoxUMAP(**FIT).fit(X)
    gbumap.tl.glassbox_umap(_data(), **FIT)
    assert list(tmp_path.iterdir()) == []


def test_early_stopping_stops_on_a_plateau():
    """With a learning rate too small to learn anything the loss is flat from the start: stop early."""
    X = np.asarray(_data(seed=1).X)
    n_steps = 3000
    model = gbumap.GlassBoxUMAP(
        n_steps=n_steps, batch_size=256, n_neighbors=10, early_stopping=True, learning_rate=1e-7
    ).fit(X)
    info = model.training_info_
    assert info["stopped_early"] is True
    assert info["n_steps"] < n_steps / 3 and len(model.loss_history_) == info["n_steps"]
    assert info["n_steps"] % 50 == 0  # it stops at a loss check
    windows = model.loss_history_.reshape(-1, 50).mean(axis=1)
    assert windows[-4:].min() >= windows[:-4].min() * (1 - 1e-3)  # the last 4 checks brought no progress
