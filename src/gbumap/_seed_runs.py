"""Seed runs of :func:`gbumap.tl.stability` that share the reference model's input side.

Kept apart from ``tl/_stability.py`` because it subclasses the estimator, which
imports torch: ``import gbumap.tl`` must stay light.
"""

from __future__ import annotations

from ._estimator import GlassBoxUMAP

__all__ = ["SharedProjection"]


class SharedProjection(GlassBoxUMAP):
    """A GlassBoxUMAP that trains on a given projection (baseline, loadings, input scale) instead of fitting one.

    Used for the bootstrap runs: a subset of cells has its own mean and median
    norm, and the runs must share the reference's input side exactly.
    """

    _reference: GlassBoxUMAP

    def _fit_projection(self, X, components, seed, timings=None):
        ref = self._reference
        self._set_projection(X.shape[1], ref.baseline_, ref.components_, None, input_norm_offset=ref.input_norm_offset_)
        return self._projected_rows(X)
