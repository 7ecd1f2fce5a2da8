"""Simulated single-cell data with known ground truth.

:func:`simulate` draws negative-binomial counts with lineage, cell-type and
continuous-state gene programs, housekeeping and noise genes and varying
sequencing depth; :func:`truth_matrix` returns which genes are up in which cell
type, to score attribution recovery.
"""

from __future__ import annotations

from ._simulate import ROLES, simulate, truth_matrix

__all__ = ["simulate", "truth_matrix", "ROLES"]
