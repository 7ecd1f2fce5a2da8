"""Adam with a one-cycle schedule, without ``torch.optim``.

``torch.optim.Optimizer.__init__`` imports ``torch._dynamo``, which costs
1.5-2.5 s in every fresh process on a 2-core CPU — more than a third of a
10k-cell fit. This class does the same arithmetic as ``torch.optim.Adam``
(no weight decay, no AMSGrad) driven by the schedule of
``torch.optim.lr_scheduler.OneCycleLR`` with cosine annealing and cycled
momentum; ``tests/test_training.py`` checks it against both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["OneCycleAdam", "one_cycle"]

_DIV_FACTOR = 25.0
_FINAL_DIV_FACTOR = 1e4
_MOMENTUM = (0.85, 0.95)


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(step: int, total_steps: int, max_lr: float, pct_start: float = 0.25) -> tuple[float, float]:
    """Learning rate and Adam ``beta1`` at ``step`` (0-based) of a one-cycle schedule.

    The rate rises from ``max_lr / 25`` to ``max_lr`` over the first
    ``pct_start`` of the steps, then falls to ``max_lr / 25 / 1e4``; ``beta1``
    moves the opposite way between 0.95 and 0.85.
    """
    initial = max_lr / _DIV_FACTOR
    final = initial / _FINAL_DIV_FACTOR
    low_m, high_m = _MOMENTUM
    warm_end = float(pct_start * total_steps) - 1
    last = total_steps - 1
    if step <= warm_end:
        pct = step / warm_end
        return _cos_anneal(initial, max_lr, pct), _cos_anneal(high_m, low_m, pct)
    pct = (step - warm_end) / (last - warm_end)
    return _cos_anneal(max_lr, final, pct), _cos_anneal(low_m, high_m, pct)


class OneCycleAdam:
    """Adam whose learning rate and ``beta1`` follow :func:`one_cycle`.

    Call :meth:`step` after the backward pass; it applies the update for the
    current step, advances the schedule and returns the learning rate it used.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        max_lr: float,
        total_steps: int,
        beta2: float = 0.999,
        eps: float = 1e-8,
        pct_start: float = 0.25,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.max_lr = float(max_lr)
        self.total_steps = max(int(total_steps), 2)
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.pct_start = float(pct_start)
        self.n_done = 0
        self._exp_avg = [torch.zeros_like(p) for p in self.params]
        self._exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> float:
        lr, beta1 = one_cycle(min(self.n_done, self.total_steps - 1), self.total_steps, self.max_lr, self.pct_start)
        t = self.n_done + 1
        bias1 = 1 - beta1**t
        bias2_sqrt = math.sqrt(1 - self.beta2**t)
        for p, m, v in zip(self.params, self._exp_avg, self._exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / bias1)
        self.n_done += 1
        return lr
