"""Training the encoder on the UMAP objective.

Each step samples ``batch_size`` graph edges with probability proportional to
their membership strength and draws ``negative_sample_rate`` negatives per
edge. On edge batches it embeds only the cells those edges touch and draws the
negatives among them, so a step costs the same whatever the number of cells;
full batch (``TrainingConfig.full_batch``, small graphs) it embeds every cell
once and draws edges and negatives over the whole layout. Which mode, and how
many steps, is chosen in :mod:`gbumap._schedule`. The data, the edge list and
its cumulative weights stay on the device as tensors, with no per-step Python
data loading.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ._optimizer import OneCycleAdam

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "train_encoder",
    "resolve_device",
    "resolve_precision",
    "sample_edge_cells",
    "sample_negatives",
]

_DIST_EPS = 1e-3


class TrainingCallback(Protocol):
    """Hooks of the training loop (see :class:`gbumap._checkpoint.CheckpointCallback`)."""

    def on_interrupt(self, encoder: nn.Module, steps_done: int, n_steps: int) -> None: ...

    def on_train_end(self, encoder: nn.Module, steps_done: int, n_steps: int) -> None: ...


@dataclass
class TrainingConfig:
    n_steps: int
    batch_size: int
    negative_sample_rate: int
    repulsion_strength: float
    learning_rate: float
    a: float
    b: float
    random_state: int | None
    early_stopping: bool = False
    patience: int = 4
    check_every: int = 50
    tol: float = 1e-3
    verbose: bool = True
    engine: str = "torch"
    precision: str = "full"
    rank: int = 0  # process rank under DDP: edges are sampled with seed random_state + rank
    # every step embeds all cells and draws batch_size edges among them (small graphs; see training_schedule)
    full_batch: bool = False


@dataclass
class TrainingResult:
    loss: np.ndarray
    learning_rate: np.ndarray
    n_steps_run: int
    stopped_early: bool
    seconds: float
    device: str
    extra: dict = field(default_factory=dict)


def resolve_device(accelerator: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU."""
    accelerator = str(accelerator).lower()
    if accelerator == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError("accelerator='cuda' was requested but torch sees no CUDA device; use 'auto' or 'cpu'.")
        return torch.device("cuda")
    if accelerator == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("accelerator='mps' was requested but MPS is not available; use 'auto' or 'cpu'.")
        return torch.device("mps")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise ValueError(f"accelerator must be 'auto', 'cpu', 'cuda' or 'mps'; got {accelerator!r}.")


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (AVX512-BF16 or AMX CPUs, bf16 GPUs)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        try:  # private helpers of torch.cpu; absent or failing means "no"
            return any(bool(getattr(torch.cpu, name)()) for name in checks if hasattr(torch.cpu, name))
        except (RuntimeError, AttributeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device, dtype: torch.dtype) -> str:
    """``"auto"`` trains with bf16 matrix products where the hardware has them, else in full precision.

    Float64 models always train in float64. Exactness does not depend on it:
    Jacobians and contributions are computed afterwards in the model's dtype.
    """
    if dtype == torch.float64:
        return "full"
    if precision == "auto":
        return "bf16-mixed" if fast_bf16(device) else "full"
    return precision


def _edge_tensors(graph: sp.spmatrix, device: torch.device, dtype: torch.dtype):
    coo = sp.coo_matrix(graph)
    keep = coo.data > 0
    heads = torch.from_numpy(coo.row[keep].astype(np.int64)).to(device)
    tails = torch.from_numpy(coo.col[keep].astype(np.int64)).to(device)
    weights = torch.from_numpy(coo.data[keep].astype(np.float64))
    if heads.numel() == 0:
        raise ValueError("The neighbour graph has no edges; check the input or n_neighbors.")
    cdf = torch.cumsum(weights, 0)
    cdf = (cdf / cdf[-1]).to(device=device, dtype=dtype)
    return heads, tails, cdf


def sample_edge_cells(
    heads: torch.Tensor, tails: torch.Tensor, cdf: torch.Tensor, n_edges: int, generator: torch.Generator
) -> torch.Tensor:
    """Cells of ``n_edges`` edges drawn with probability proportional to their weight: heads, then tails."""
    u = torch.rand(n_edges, generator=generator, device=cdf.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, u).clamp_(max=cdf.numel() - 1)
    return torch.cat([heads[idx], tails[idx]])


def sample_negatives(n_embedded: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` negative partners drawn uniformly among all ``n_embedded`` cells of the step (heads and tails)."""
    return torch.randint(0, n_embedded, (count,), generator=generator, device=generator.device)


def _umap_step_loss(
    emb_head: torch.Tensor,
    emb_tail: torch.Tensor,
    emb_pool: torch.Tensor,
    neg_idx: torch.Tensor,
    log_a: float,
    b: float,
    negative_sample_rate: int,
    repulsion_strength: float,
) -> torch.Tensor:
    """Binary cross-entropy of UMAP with ``q(d) = 1 / (1 + a·d^(2b))``.

    Writing ``s = log a + b·log d²``, ``-log q = softplus(s)`` and
    ``-log(1 - q) = softplus(-s)``, which is stable at both ends.
    """
    d2_pos = (emb_head - emb_tail).pow(2).sum(1)
    s_pos = log_a + b * torch.log(d2_pos + _DIST_EPS)
    attraction = nn.functional.softplus(s_pos).mean()
    if negative_sample_rate == 0:
        return attraction
    heads_rep = emb_head.repeat(negative_sample_rate, 1)
    # index_select, not emb_pool[neg_idx]: its backward is index_add, half the time of indexing's on CPU
    d2_neg = (heads_rep - torch.index_select(emb_pool, 0, neg_idx)).pow(2).sum(1)
    s_neg = log_a + b * torch.log(d2_neg + _DIST_EPS)
    repulsion = nn.functional.softplus(-s_neg).mean()
    return attraction + repulsion_strength * negative_sample_rate * repulsion


def _embed_step(model: nn.Module, rows: torch.Tensor, device: torch.device, mixed: bool) -> torch.Tensor:
    """The layout of ``rows``; with ``mixed``, bf16 matrix products and a float32 result."""
    if not mixed:
        return model(rows)
    # bf16 matrix products, float32 weights, loss and optimizer state
    with torch.autocast(device.type, dtype=torch.bfloat16):
        emb = model(rows)
    return emb.float()


def _plain_backward(loss: torch.Tensor) -> None:
    loss.backward()


def fabric_settings(device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Fabric's ``accelerator`` and ``precision`` for a device and model dtype."""
    accelerator = {"cuda": "cuda", "mps": "mps"}.get(device.type, "cpu")
    return accelerator, "64-true" if dtype == torch.float64 else "32-true"


def _lightning_setup(encoder: nn.Module, device: torch.device, dtype: torch.dtype, fabric=None):
    """Hand device placement, precision and the backward pass to Lightning Fabric.

    Fabric wraps the module in place: the parameters stay the same tensors,
    so the caller keeps using its own ``encoder`` and optimizer afterwards.
    ``fabric``: an already launched Fabric (e.g. with the DDP strategy, whose
    wrapper all-reduces the gradients); by default a single-device one.
    """
    if fabric is None:
        from lightning.fabric import Fabric

        accelerator, precision = fabric_settings(device, dtype)
        fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)
    wrapped = fabric.setup_module(encoder, move_to_device=False)
    return wrapped, fabric.backward


def train_encoder(
    encoder: nn.Module,
    Z: torch.Tensor,
    graph: sp.spmatrix,
    config: TrainingConfig,
    callbacks: Sequence[TrainingCallback] = (),
    fabric=None,
) -> TrainingResult:
    """Fit ``encoder`` so that its layout of ``Z`` matches the fuzzy ``graph``.

    ``Z`` must already sit on the training device. With ``fabric`` (a launched
    Lightning Fabric, e.g. one process of a DDP run; see ``_distributed``) the
    loop runs through its wrapped module and backward, and the loss windows of
    the early-stopping and divergence checks are averaged over the processes,
    so that all of them take the same decisions. Raises ``KeyboardInterrupt``
    unchanged, so a caller that writes results only after training returns
    leaves its inputs as they were. Each callback's ``on_interrupt(encoder,
    steps_done, n_steps)`` runs first; ``on_train_end(encoder, steps_done,
    n_steps)`` runs when training ends normally (e.g. to save a checkpoint).
    """
    import time

    from tqdm import tqdm  # text bars: tqdm.auto warns in Jupyter without ipywidgets

    device = Z.device
    heads, tails, cdf = _edge_tensors(graph, device, Z.dtype)
    gen = torch.Generator(device=device)
    gen.manual_seed((0 if config.random_state is None else int(config.random_state)) + int(config.rank))

    n_steps = int(config.n_steps)
    optimizer = OneCycleAdam(encoder.parameters(), max_lr=config.learning_rate, total_steps=n_steps)
    model, backward = encoder, _plain_backward
    if fabric is not None or config.engine == "lightning":
        model, backward = _lightning_setup(encoder, device, Z.dtype, fabric)
    several = fabric is not None and fabric.world_size > 1
    B = int(config.batch_size)
    n_cells = int(Z.shape[0])
    nsr = int(config.negative_sample_rate)
    mixed = config.precision == "bf16-mixed"
    log_a = math.log(config.a)
    losses = torch.zeros(n_steps, dtype=Z.dtype, device=device)
    lrs = np.zeros(n_steps)
    encoder.train()
    start = time.perf_counter()
    best = math.inf
    stale = 0
    stopped_early = False
    step = 0
    completed = 0
    bar = tqdm(total=n_steps, disable=not config.verbose, desc="gbumap training", unit="step", leave=False)
    try:
        for step in range(n_steps):
            cells = sample_edge_cells(heads, tails, cdf, B, gen)
            if step == 0:
                first_cells = cells
            emb = _embed_step(model, Z if config.full_batch else Z[cells], device, mixed)
            if config.full_batch:  # every cell embedded: edges index the whole layout, negatives any cell
                neg_idx = sample_negatives(n_cells, B * nsr, gen)
                head_emb, tail_emb = torch.index_select(emb, 0, cells[:B]), torch.index_select(emb, 0, cells[B:])
            else:  # the step's 2B cells: heads, then tails; negatives among them
                neg_idx = sample_negatives(2 * B, B * nsr, gen)
                head_emb, tail_emb = emb[:B], emb[B : 2 * B]
            loss = _umap_step_loss(
                head_emb, tail_emb, emb, neg_idx, log_a, config.b, nsr, config.repulsion_strength
            )
            optimizer.zero_grad()
            backward(loss)
            lrs[step] = optimizer.step()
            completed = step + 1
            losses[step] = loss.detach()
            if (step + 1) % config.check_every == 0 or step + 1 == n_steps:
                window = losses[max(0, step + 1 - config.check_every) : step + 1].mean()
                window = float(fabric.all_reduce(window, reduce_op="mean") if several else window)
                if not math.isfinite(window):
                    raise FloatingPointError(
                        f"Training diverged at step {step + 1} (loss {window}). Lower learning_rate "
                        "or check the input scale."
                    )
                bar.set_postfix(loss=f"{window:.4f}", refresh=False)
                bar.update(min(config.check_every, n_steps - bar.n))
                if config.early_stopping:
                    if window < best * (1 - config.tol):
                        best, stale = window, 0
                    else:
                        stale += 1
                        if stale >= config.patience:
                            stopped_early = True
                            break
    except KeyboardInterrupt:
        for callback in callbacks:
            callback.on_interrupt(encoder, completed, n_steps)
        raise
    finally:
        bar.close()
    encoder.eval()
    n_run = step + 1
    for callback in callbacks:
        callback.on_train_end(encoder, n_run, n_steps)
    return TrainingResult(
        loss=losses[:n_run].cpu().numpy().astype(np.float64),
        learning_rate=lrs[:n_run],
        n_steps_run=n_run,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - start,
        device=str(device),
        # identifies the first step's edges, e.g. to check that DDP processes sample different ones
        extra={"first_batch_checksum": zlib.crc32(first_cells.cpu().numpy().tobytes())},
    )
