"""The training schedule: how many steps, how many edges a step, which rate, which cells a step embeds.

Training cost follows the data. A small graph is trained *full batch*: each
step embeds every cell once and draws ``batch_size`` edges (and their
negatives, among all cells) on that layout, so a step's network pass serves
many edges. A large graph is trained on *edge batches*: each step embeds only
the ``2 × batch_size`` cells its edges touch, so a step costs the same
whatever the number of cells. The switch, the step counts and the rates were
measured in ``benchmarks/everyday.py`` (kNN preservation and label accuracy
against ``sc.tl.umap`` on the same graph, and time in one warm process).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FULL_BATCH_MAX_CELLS",
    "TrainingSchedule",
    "auto_n_steps",
    "training_schedule",
]

#: Graphs with at most this many cells are trained full batch by default. Measured on the everyday
#: path (simulator, 2 cores): full batch is the cheaper of the two at 8k and 10k cells too (0.72× and
#: 0.66× ``sc.tl.umap``'s time against 0.90× and 0.76×) but keeps fewer neighbours there (0.87× and
#: 0.86× umap's kNN preservation against 0.94× and 0.97×); below about 7,000 cells edge batches'
#: fixed 2,000 steps cost more than ``sc.tl.umap``'s 500 epochs, while full batch keeps more
#: neighbours than umap (1.28× at 3k).
FULL_BATCH_MAX_CELLS = 7000
#: Full batch: edges drawn per step, steps, and the peak learning rate.
FULL_BATCH_EDGES = 8192
FULL_BATCH_STEPS = 400
FULL_BATCH_LEARNING_RATE = 2e-2
#: Edge batches: edges per step and the peak learning rate (steps: :func:`auto_n_steps`).
EDGE_BATCH_EDGES = 1024
EDGE_BATCH_LEARNING_RATE = 1e-2


def auto_n_steps(n_cells: int) -> int:
    """Default number of edge-batch steps: grows slowly with the data size.

    An edge-batch step costs the same for any number of cells, so a fixed
    budget would make large data sets see each edge fewer times; a
    logarithmic increase (2,000 steps up to 30k cells, 2,286 at 90k, 2,600 at
    300k, at most 3,000) keeps quality at little cost. Chosen by the layout
    sweep in ``benchmarks/sweep_layout.py`` (4×128 encoder): at 20k cells
    1,000 → 2,000 steps raised kNN preservation by 13-19%, 2,000 → 4,000 by
    4-6%.
    """
    return int(np.clip(2000 + 600 * np.log10(max(n_cells, 1) / 3e4), 2000, 3000))


@dataclass(frozen=True)
class TrainingSchedule:
    """The resolved training settings of one fit."""

    n_steps: int
    batch_size: int
    learning_rate: float
    full_batch: bool


def training_schedule(
    n_cells: int,
    *,
    n_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    full_batch: bool | None = None,
    devices: int = 1,
) -> TrainingSchedule:
    """Resolve the estimator's training parameters for a graph of ``n_cells`` cells.

    Each argument left ``None`` takes its default for the chosen mode; a given
    value is used as it is. ``full_batch=None`` trains full batch when the
    graph has at most :data:`FULL_BATCH_MAX_CELLS` cells and one process
    trains (``devices == 1``; under DDP each process samples its own edges of
    its own step, which needs edge batches).

    Examples
    --------
    >>> training_schedule(3_000)
    TrainingSchedule(n_steps=400, batch_size=8192, learning_rate=0.02, full_batch=True)
    >>> training_schedule(90_000).full_batch
    False
    """
    if full_batch is None:
        full_batch = int(devices) == 1 and int(n_cells) <= FULL_BATCH_MAX_CELLS
    if full_batch:
        defaults = (FULL_BATCH_STEPS, FULL_BATCH_EDGES, FULL_BATCH_LEARNING_RATE)
    else:
        defaults = (auto_n_steps(n_cells), EDGE_BATCH_EDGES, EDGE_BATCH_LEARNING_RATE)
    given = (n_steps, batch_size, learning_rate)
    steps, edges, rate = (default if value is None else value for value, default in zip(given, defaults))
    return TrainingSchedule(int(steps), int(edges), float(rate), bool(full_batch))
