"""Multi-process (DDP) training of the encoder with Lightning Fabric.

``GlassBoxUMAP(devices=n)`` with ``n > 1`` trains in ``n`` processes under
Fabric's DDP strategy. Every process runs the same loop
(:func:`gbumap._training.train_encoder`) for the same number of steps on its
own edge samples (its generator is seeded with ``random_state + rank``). DDP
starts every process from rank 0's weights and averages the gradients at each
step, so all processes keep identical weights and a step sees
``n × batch_size`` edges. The backend is gloo on the CPU and NCCL on CUDA (one
GPU per process).

There are two ways in:

* **launched**: ``WORLD_SIZE`` is in the environment (torchrun, or SLURM with
  a launcher that sets the same variables). Every process already runs the
  user's script and calls ``fit`` itself; each trains its rank in-process
  (``strategy="ddp"``) and ends with the same weights.
* **spawned**: anything else (a script, pytest, a notebook). ``fit`` starts
  ``n`` worker processes (``strategy="ddp_spawn"``), hands them the encoder,
  the encoder input and the graph (through a file in a private temporary
  folder), and loads rank 0's trained weights into its own encoder. The
  workers re-run the main script, so a script must guard its entry point with
  ``if __name__ == "__main__":`` and a custom encoder must be picklable. A
  worker that fails raises in the parent (``ProcessRaisedException`` with the
  worker's traceback, or a ``RuntimeError`` when it exits while starting).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import zlib
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ._training import TrainingConfig, TrainingResult, fabric_settings, train_encoder

__all__ = ["check_devices", "launched", "train_distributed"]

# what a launcher (torchrun) sets besides WORLD_SIZE, and what Fabric's DDP needs from it
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# what spawning touches in the parent's environment (restored afterwards)
_SPAWN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "OMP_NUM_THREADS")


def launched() -> bool:
    """Whether this process was started by a launcher (``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in os.environ


def check_devices(devices: int, device: torch.device) -> torch.device:
    """Refuse, before any work, a ``devices > 1`` run that cannot start; return this process's device.

    In launched mode on CUDA that is ``cuda:LOCAL_RANK``; otherwise ``device``.
    """
    if devices <= 1:
        return device
    if device.type == "mps":
        raise ValueError(
            f"devices={devices} is not supported on Apple MPS (no multi-process backend); "
            "use devices=1, or accelerator='cpu' to train in several CPU processes."
        )
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if devices > count:
            raise ValueError(
                f"devices={devices} needs one CUDA GPU per process but torch sees {count}; "
                f"use devices <= {count} (check CUDA_VISIBLE_DEVICES) or accelerator='cpu'."
            )
    if not launched():
        _check_spawnable()
        return device
    missing = [name for name in _LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set ({os.environ['WORLD_SIZE']!r}), so gbumap expects to run under a launcher, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing from the environment. Start the "
            "script with torchrun (e.g. `torchrun --nproc_per_node=N script.py`), which sets WORLD_SIZE, RANK, "
            "LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or unset WORLD_SIZE to let gbumap start the processes itself."
        )
    try:
        world = int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer; the environment has {os.environ['WORLD_SIZE']!r}.") from None
    if world != devices:
        raise ValueError(
            f"devices={devices} but the launcher started WORLD_SIZE={world} processes; pass devices={world} "
            "(one training process per launched process), or launch as many processes as devices."
        )
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _check_spawnable() -> None:
    """Refuse a main script that spawned workers cannot re-import (e.g. piped on standard input).

    Python's spawn start method runs the parent's main file again in each
    worker; when that "file" is ``<stdin>`` the workers die while starting and
    the parent can block for good while sending them their arguments.
    Interactive sessions, notebooks and ``python -c`` have no main file and
    are fine.
    """
    import multiprocessing.process
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is not None or path is None:
        return  # python -m (re-imported by name), or nothing to re-import
    if not os.path.isfile(os.path.join(multiprocessing.process.ORIGINAL_DIR, path)):
        raise RuntimeError(
            f"devices > 1 starts worker processes, which re-run the main script, but the main script {path!r} is "
            "not a file (was it piped on standard input?). Save it to a file, with its entry point under "
            "`if __name__ == \"__main__\":`, or start it with torchrun."
        )


def train_distributed(
    encoder: nn.Module, Z: torch.Tensor, graph: sp.spmatrix, config: TrainingConfig, devices: int
) -> TrainingResult:
    """Train ``encoder`` in ``devices`` DDP processes; its weights are replaced by the trained ones.

    The result is rank 0's (loss and learning-rate history); ``extra`` holds
    ``"strategy"`` (``"ddp"`` or ``"ddp_spawn"``) and, per rank, a checksum of
    the first step's edges and of the final weights.
    """
    from lightning.fabric import Fabric

    accelerator, precision = fabric_settings(Z.device, Z.dtype)
    if launched():
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=1, strategy="ddp", precision=precision)
        fabric.launch()
        work = copy.deepcopy(encoder)  # DDP hooks stay on the copy, not on the model the user keeps
        result = _train_rank(fabric, work, Z, graph, config)
        with torch.no_grad():
            encoder.load_state_dict(work.state_dict())
        encoder.eval()
        result.extra["strategy"] = "ddp"
        return result

    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp_spawn", precision=precision)
    threads = max(1, _cpu_count() // devices)
    saved = {name: os.environ.get(name) for name in _SPAWN_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="gbumap-ddp-") as folder:
        # Inputs and rank 0's result go through files in this private folder, not through pipes:
        # the launcher's return pipe blocks on anything over ~64 KB, and a worker that dies while
        # starting leaves the parent blocked for good if its arguments are larger than that.
        inputs = {"encoder": copy.deepcopy(encoder).cpu(), "Z": Z.detach().cpu(), "graph": sp.csr_matrix(graph)}
        torch.save(inputs, os.path.join(folder, "inputs.pt"))
        del inputs
        try:
            level = _LogLevel(logging.INFO if config.verbose else logging.WARNING)
            fabric.launch(_worker, folder, config, threads, level)
        except torch.multiprocessing.ProcessExitedException as err:
            raise RuntimeError(
                f"A training process exited with code {err.exit_code} before training finished; its output above "
                "says why. If it is about a missing `if __name__ == \"__main__\":` guard, put the script's entry "
                "point under one (the workers re-run the main script), or start the script with torchrun."
            ) from err
        finally:  # the launcher sets MASTER_PORT here; a later fit must not read it as a launcher's
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        out = torch.load(os.path.join(folder, "rank0.pt"), weights_only=True)
    reference = encoder.state_dict()
    with torch.no_grad():
        encoder.load_state_dict({k: v.to(reference[k].dtype) for k, v in out.pop("state").items()})
    encoder.eval()  # as train_encoder leaves it
    out["loss"] = out["loss"].numpy()
    out["learning_rate"] = out["learning_rate"].numpy()
    result = TrainingResult(**out)
    result.extra["strategy"] = "ddp_spawn"
    return result


class _LogLevel:
    """Sets the level of Lightning's logger in a spawned process as soon as its arguments are unpickled.

    That is before Fabric connects the processes (and logs it), which happens
    before the worker function runs.
    """

    def __init__(self, level: int) -> None:
        self.level = level

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for name in ("lightning.fabric", "lightning.pytorch"):  # rank_zero_info logs to the latter once imported
            logging.getLogger(name).setLevel(self.level)


def _worker(fabric, folder: str, config: TrainingConfig, threads: int, _level: _LogLevel) -> None:
    """One spawned process: train on ``folder/inputs.pt``; rank 0 saves its weights and result to ``rank0.pt``."""
    torch.set_num_threads(threads)
    device = fabric.device
    # written by the parent a moment ago in its private temporary folder (a module and a SciPy matrix: not weights-only)
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=False)
    encoder = inputs["encoder"].to(device)
    Z = inputs["Z"].to(device)
    result = _train_rank(fabric, encoder, Z, inputs["graph"], config)
    if fabric.global_rank == 0:
        out = {
            "state": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
            "loss": torch.from_numpy(np.ascontiguousarray(result.loss)),
            "learning_rate": torch.from_numpy(np.ascontiguousarray(result.learning_rate)),
            "n_steps_run": int(result.n_steps_run),
            "stopped_early": bool(result.stopped_early),
            "seconds": float(result.seconds),
            "device": str(result.device),
            "extra": dict(result.extra),  # ints and lists of ints
        }
        torch.save(out, os.path.join(folder, "rank0.pt"))


def _train_rank(fabric, encoder: nn.Module, Z: torch.Tensor, graph, config: TrainingConfig) -> TrainingResult:
    """The loop of one process, then the per-rank checksums of its first edges and its final weights."""
    rank = int(fabric.global_rank)
    config = replace(config, rank=rank, verbose=bool(config.verbose) and rank == 0, engine="lightning")
    result = train_encoder(encoder, Z, graph, config, fabric=fabric)
    mine = torch.tensor(
        [result.extra["first_batch_checksum"], _weights_checksum(encoder)], dtype=torch.int64, device=fabric.device
    )
    parts = [torch.empty_like(mine) for _ in range(fabric.world_size)]
    torch.distributed.all_gather(parts, mine)  # Fabric's all_gather goes through a deprecated autograd op
    every = torch.stack(parts).cpu()
    result.extra["rank_batch_checksums"] = [int(v) for v in every[:, 0]]
    result.extra["rank_weight_checksums"] = [int(v) for v in every[:, 1]]
    return result


def _weights_checksum(module: nn.Module) -> int:
    crc = 0
    for value in module.state_dict().values():
        crc = zlib.crc32(value.detach().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
