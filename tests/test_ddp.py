"""Multi-process (DDP) training: GlassBoxUMAP(devices=n) under Lightning Fabric, on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gbumap import GlassBoxUMAP
from gbumap._distributed import _weights_checksum

STEPS = 200
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _knn_accuracy(embedding: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(5), embedding, labels, cv=5).mean())


def _fit_capturing(params: dict, X: np.ndarray):
    """Fit, and return the model and the training result of ``_train`` (which carries the per-rank checksums)."""
    results = []
    original = GlassBoxUMAP._train

    def spy(self, *args, **kwargs):
        results.append(original(self, *args, **kwargs))
        return results[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GlassBoxUMAP, "_train", spy)
        model = GlassBoxUMAP(**params).fit(X)
    return model, results[-1]


@pytest.fixture(scope="module")
def fits(digits):
    """The same fit in one process and in two DDP processes (1,797 digits, 200 steps)."""
    X, _ = digits
    before = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    # edge batches in both: DDP always samples edge batches, and rank 0 must sample as one process does
    common = dict(n_steps=STEPS, accelerator="cpu", random_state=0, full_batch=False)
    single = _fit_capturing(common, X)
    ddp = _fit_capturing({**common, "devices": 2}, X)
    after = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    return {"single": single, "ddp": ddp, "env_before": before, "env_after": after}


@pytest.mark.slow
def test_two_process_fit_is_exact_and_recorded(fits, digits):
    X, _ = digits
    model, result = fits["ddp"]
    emb = model.embedding_
    assert emb.shape == (X.shape[0], 2) and np.isfinite(emb).all()
    gap = np.abs(model.compute_contributions(X).sum(-1).astype(np.float64) - emb).max()
    assert gap / np.abs(emb).max() < 1e-5
    info = model.training_info_
    assert info["devices"] == 2 and info["strategy"] == "ddp_spawn" and info["engine"] == "lightning"
    assert info["n_steps"] == STEPS and len(model.loss_history_) == STEPS and np.isfinite(model.loss_history_).all()
    assert fits["single"][0].training_info_["devices"] == 1
    assert fits["single"][0].training_info_["strategy"] == "single_device"
    # the parent's own module, on its device, in eval mode, holding rank 0's trained weights
    assert not model.encoder_.training and model.device_ == torch.device("cpu")
    assert _weights_checksum(model.encoder_) == result.extra["rank_weight_checksums"][0]
    np.testing.assert_allclose(model.transform(X), emb, rtol=1e-5, atol=1e-6)
    # spawning leaves no launcher variables behind (a later fit would take them for torchrun's)
    assert fits["env_after"] == fits["env_before"]


@pytest.mark.slow
def test_ranks_sample_their_own_edges_and_end_with_the_same_weights(fits):
    _, single = fits["single"]
    _, ddp = fits["ddp"]
    batches = ddp.extra["rank_batch_checksums"]
    weights = ddp.extra["rank_weight_checksums"]
    assert len(batches) == len(weights) == 2
    assert batches[0] != batches[1]  # seed + rank: not the same edges on every rank
    assert batches[0] == single.extra["first_batch_checksum"]  # rank 0 samples as a one-process fit would
    assert weights[0] == weights[1]  # gradients all-reduced: identical updates everywhere


@pytest.mark.slow
def test_two_process_quality_matches_one_process(fits, digits):
    _, y = digits
    one = _knn_accuracy(fits["single"][0].embedding_, y)
    two = _knn_accuracy(fits["ddp"][0].embedding_, y)
    # measured (seeds 0-2): one process 0.89-0.92, two processes 0.93-0.94 (twice the edges per step),
    # an untrained encoder 0.19-0.25
    assert one > 0.85 and two >= one - 0.03, (one, two)
    assert not np.allclose(fits["single"][0].embedding_, fits["ddp"][0].embedding_)


@pytest.mark.slow
def test_two_process_model_round_trips_through_the_registry(fits, digits, tmp_path):
    import anndata as ad

    import gbumap
    from gbumap._registry import ModelRecord, decode_record, encode_record

    X, _ = digits
    model, _ = fits["ddp"]
    names = np.array([f"pixel{i}" for i in range(X.shape[1])])
    adata = ad.AnnData(X.copy())
    adata.var_names = names
    adata.uns["gbumap"] = encode_record(ModelRecord(model=model, feature_names=names))
    reg = adata.uns["gbumap"]
    assert int(reg["params"]["devices"]) == 2
    assert int(reg["training"]["devices"]) == 2 and reg["training"]["strategy"] == "ddp_spawn"
    adata.write_h5ad(tmp_path / "ddp.h5ad")
    back = gbumap.get.model(ad.read_h5ad(tmp_path / "ddp.h5ad"))
    assert back.devices == 2
    assert back.training_info_["devices"] == 2 and back.training_info_["strategy"] == "ddp_spawn"
    for name, value in model.encoder_.state_dict().items():
        assert torch.equal(value, back.encoder_.state_dict()[name])
    np.testing.assert_allclose(back.transform(X), model.embedding_, rtol=1e-5, atol=1e-6)

    # a record written before devices existed still loads, as one process
    old = encode_record(ModelRecord(model=model, feature_names=names))
    del old["params"]["devices"], old["training"]["devices"], old["training"]["strategy"]
    legacy = decode_record(old).model
    assert legacy.devices == 1
    assert legacy.training_info_["devices"] == 1 and legacy.training_info_["strategy"] == "single_device"


def test_model_saved_before_devices_existed_loads_with_one_device():
    import anndata as ad

    import gbumap

    adata = ad.read_h5ad(Path(__file__).parent / "data" / "wave1_model.h5ad")
    assert "devices" not in adata.uns["gbumap"]["params"]
    model = gbumap.get.model(adata)
    assert model.devices == 1 and model.training_info_["devices"] == 1
    assert model.training_info_["strategy"] == "single_device"


# ---------------------------------------------------------------- bad input, refused before any work
@pytest.fixture(scope="module")
def fitted_once(digits):
    X, _ = digits
    return GlassBoxUMAP(n_steps=20, batch_size=128, accelerator="cpu", random_state=0).fit(X[:300])


@pytest.fixture
def fitted(fitted_once):
    import copy

    return copy.deepcopy(fitted_once)


def _refused(model, X, match, monkeypatch, error=ValueError):
    """``fit`` raises ``match`` before the PCA starts, and the fitted model is left as it was."""
    state = {k: v.clone() for k, v in model.encoder_.state_dict().items()}
    kept = {k: model.__dict__[k] for k in ("embedding_", "graph_", "training_info_", "encoder_", "baseline_")}

    def no_work(*args, **kwargs):
        raise AssertionError("fit went past its checks")

    monkeypatch.setattr(GlassBoxUMAP, "_fit_projection", no_work)
    with pytest.raises(error, match=match):
        model.fit(X)
    for name, value in kept.items():
        assert model.__dict__[name] is value
    for name, value in model.encoder_.state_dict().items():
        assert torch.equal(value, state[name])


@pytest.mark.parametrize("devices", [0, -2, 1.5, True, "2", None])
def test_devices_must_be_a_positive_integer(fitted, digits, devices, monkeypatch):
    fitted.set_params(devices=devices)
    _refused(fitted, digits[0][:300], r"devices must be an integer >= 1", monkeypatch)


def test_several_devices_on_mps_are_refused(fitted, digits, monkeypatch):
    fitted.set_params(devices=2, accelerator="mps")
    _refused(fitted, digits[0][:300], r"devices=2 is not supported with accelerator='mps'.*accelerator='cpu'",
             monkeypatch)


def test_more_devices_than_gpus_is_refused(fitted, digits, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    fitted.set_params(devices=2, accelerator="cuda")
    _refused(fitted, digits[0][:300], r"devices=2 needs one CUDA GPU per process but torch sees 1; use devices <= 1",
             monkeypatch)


def test_checkpoint_with_several_devices_is_refused(fitted, digits, tmp_path, monkeypatch):
    fitted.set_params(devices=2, checkpoint_path=tmp_path / "ckpt.pt")
    _refused(fitted, digits[0][:300], r"checkpoint_path is not supported with devices=2", monkeypatch)
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.parametrize("missing", [("MASTER_ADDR",), ("MASTER_PORT",), ("MASTER_ADDR", "MASTER_PORT")])
def test_incomplete_launcher_environment_is_refused(fitted, digits, missing, monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29511"}.items():
        monkeypatch.setenv(name, value)
    for name in missing:
        monkeypatch.delenv(name)
    fitted.set_params(devices=2)
    listed = ", ".join(missing)
    _refused(fitted, digits[0][:300], rf"WORLD_SIZE is set.*{listed} (is|are) missing.*torchrun", monkeypatch)


def test_world_size_other_than_devices_is_refused(fitted, digits, monkeypatch):
    for name, value in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29511"}.items():
        monkeypatch.setenv(name, value)
    fitted.set_params(devices=2)
    _refused(fitted, digits[0][:300], r"devices=2 but the launcher started WORLD_SIZE=4 processes; pass devices=4",
             monkeypatch)


def test_main_script_that_workers_cannot_reimport_is_refused(fitted, digits, monkeypatch):
    # e.g. `python - < script.py`: spawned workers would die re-running "<stdin>" and the parent could hang
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__file__", "<stdin>", raising=False)
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    fitted.set_params(devices=2)
    _refused(fitted, digits[0][:300], r"main script '<stdin>' is not a file.*__main__.*torchrun", monkeypatch,
             error=RuntimeError)


# ---------------------------------------------------------------- launched by torchrun
_LAUNCHED = """
    import json, os, sys
    import numpy as np
    from sklearn.datasets import load_digits
    from gbumap import GlassBoxUMAP
    from gbumap._distributed import _weights_checksum

    X = load_digits().data.astype(np.float32)[:600]
    model = GlassBoxUMAP(n_steps=100, accelerator="cpu", devices=2, random_state=0).fit(X)
    rank = int(os.environ["RANK"])
    np.save(os.path.join(sys.argv[1], f"embedding{rank}.npy"), model.embedding_)
    info = {k: v for k, v in model.training_info_.items() if k != "learning_rate"}
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({"info": info, "weights": _weights_checksum(model.encoder_), "training": model.encoder_.training}, f)
"""


@pytest.mark.slow
def test_torchrun_launched_processes_train_in_place(tmp_path):
    script = tmp_path / "launched.py"
    script.write_text(textwrap.dedent(_LAUNCHED))
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["info"]["devices"] == 2 and rank["info"]["strategy"] == "ddp" and not rank["training"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    emb = [np.load(tmp_path / f"embedding{r}.npy") for r in (0, 1)]
    assert np.isfinite(emb[0]).all()
    np.testing.assert_array_equal(emb[0], emb[1])
