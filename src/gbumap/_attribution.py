"""Turning input-space Jacobians into exact per-feature contributions."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "Reduction",
    "check_reduction",
    "contributions_from_jacobian",
    "reconstruction_gap",
    "reduce_contributions",
    "reduction_label",
]

Reduction = Literal["l2", "normed_l2"] | int | None


def contributions_from_jacobian(
    jacobian: np.ndarray,
    offset: np.ndarray,
    components: np.ndarray | None,
    degree: int = 1,
) -> np.ndarray:
    """Exact contributions ``C[i, d, g] = J_x[i, d, g] · (x[i, g] - b[g]) / degree``.

    Parameters
    ----------
    jacobian
        ``(n, n_components, n_inputs)``: the encoder's Jacobian in its own
        input space (principal components, or features when there is no PCA).
    offset
        ``(n, n_features)``: each cell's expression minus the baseline, for the
        features wanted (dense).
    components
        ``(n_inputs, n_features)`` PCA loadings restricted to the same
        features, or ``None`` when the encoder sees the features directly.
    degree
        Homogeneity degree of the encoder.
    """
    jac_x = jacobian if components is None else jacobian @ components
    contrib = jac_x * offset[:, None, :]
    if degree != 1:
        contrib = contrib / degree
    return contrib


def reduce_contributions(contrib: np.ndarray, reduction: Reduction) -> np.ndarray:
    """Collapse the axis dimension of ``(n, d, g)`` contributions.

    ``None`` keeps ``(n, d, g)``; ``"l2"`` is the Euclidean norm over axes;
    ``"normed_l2"`` divides each cell's L2 magnitudes by their sum so they add
    to 1 per cell; an integer picks that signed axis.
    """
    if reduction is None:
        return contrib
    if isinstance(reduction, (int, np.integer)) and not isinstance(reduction, bool):
        if not 0 <= reduction < contrib.shape[1]:
            raise ValueError(f"Axis {reduction} does not exist; the embedding has {contrib.shape[1]} axes.")
        return contrib[:, int(reduction), :]
    if reduction == "l2":
        return np.sqrt((contrib.astype(np.float64) ** 2).sum(axis=1)).astype(contrib.dtype)
    if reduction == "normed_l2":
        mag = np.sqrt((contrib.astype(np.float64) ** 2).sum(axis=1))
        total = mag.sum(axis=1, keepdims=True)
        total[total == 0] = 1.0
        return (mag / total).astype(contrib.dtype)
    raise ValueError(f"reduction must be None, 'l2', 'normed_l2' or an axis index; got {reduction!r}.")


def reduction_label(reduction: Reduction, key: str = "gbumap") -> str:
    """Human-readable name of a reduction, for titles, axis labels and summaries."""
    if reduction == "l2":
        return "L2 contribution"
    if reduction == "normed_l2":
        return "share of the cell's L2 total"
    return f"contribution to {key}{int(reduction) + 1} (signed)"


def check_reduction(reduction: Reduction, n_axes: int) -> Reduction:
    """Validate a ``reduction`` argument against the number of embedding axes."""
    if isinstance(reduction, (bool, np.bool_)):
        raise ValueError(f"reduction must be 'l2', 'normed_l2' or an axis index; got {reduction!r}.")
    if isinstance(reduction, (int, np.integer)):
        if not 0 <= int(reduction) < n_axes:
            raise ValueError(f"Axis {reduction} does not exist; the embedding has {n_axes} axes (0 to {n_axes - 1}).")
        return int(reduction)
    if reduction not in ("l2", "normed_l2"):
        raise ValueError(f"reduction must be 'l2', 'normed_l2' or an axis index; got {reduction!r}.")
    return reduction


def reconstruction_gap(contrib: np.ndarray, embedding: np.ndarray) -> float:
    """``max |Σ_g C − Z|`` over a batch: the contributions summed in float64 against the embedding."""
    rebuilt = contrib.sum(axis=-1, dtype=np.float64)
    return float(np.abs(rebuilt - np.asarray(embedding, dtype=np.float64)).max())
