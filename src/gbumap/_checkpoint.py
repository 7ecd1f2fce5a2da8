"""Opt-in checkpoints of the encoder, written by a callback of the training loop."""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["CheckpointCallback"]


class CheckpointCallback:
    """Save the encoder's ``state_dict`` at the end of training and when training is interrupted.

    The file holds ``{"format": "gbumap-checkpoint", "state_dict", "step",
    "n_steps", "interrupted", "n_inputs", "n_components"}``: tensors and plain
    Python values only, so it loads with ``torch.load(path, weights_only=True)``.
    It is written to a temporary name first and then renamed, so a half-written
    checkpoint is never left behind.
    """

    def __init__(self, path: str | os.PathLike, n_inputs: int, n_components: int) -> None:
        self.path = os.fspath(path)
        self.n_inputs = int(n_inputs)
        self.n_components = int(n_components)

    def on_interrupt(self, encoder: nn.Module, steps_done: int, n_steps: int) -> None:
        self._save(encoder, steps_done, n_steps, interrupted=True)

    def on_train_end(self, encoder: nn.Module, steps_done: int, n_steps: int) -> None:
        self._save(encoder, steps_done, n_steps, interrupted=False)

    def _save(self, encoder: nn.Module, step: int, n_steps: int, *, interrupted: bool) -> None:
        state = {
            "format": "gbumap-checkpoint",
            "state_dict": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
            "step": int(step),
            "n_steps": int(n_steps),
            "interrupted": bool(interrupted),
            "n_inputs": self.n_inputs,
            "n_components": self.n_components,
        }
        tmp = f"{self.path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)
