"""Seed runs of :func:`gbumap.tl.stability` that share the reference model's input side.

Kept apart from ``tl/_stability.py`` because it subclasses the estimator, which
imports torch: ``import gbumap.tl`` must stay light.
"""

from __future__ import annotations

import numpy as np

from ._estimator import GlassBoxUMAP

__all__ = ["SharedProjection"]


class SharedProjection(GlassBoxUMAP):
    """A GlassBoxUMAP that trains on a given projection (baseline, loadings, input scale) instead of fitting one.

    Used for the bootstrap runs: a subset of cells has its own mean and median
    norm, and the runs must share the reference's input side exactly.
    """

    _reference: GlassBoxUMAP
    _codes = None  # batch codes of the training rows, for a batch-corrected reference

    def _fit_projection(self, X, components, seed, timings=None):
        ref = self._reference
        self._set_projection(X.shape[1], ref.baseline_, ref.components_, None, input_norm_offset=ref.input_norm_offset_)
        Z_raw = self._projected_rows(X)
        if getattr(ref, "correction_", None) is None:
            return Z_raw
        Z64 = Z_raw.astype(np.float64)
        return (Z64 - ref.correction_.shifts(Z64, self._codes)).astype(Z_raw.dtype)
