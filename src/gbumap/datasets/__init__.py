"""Simulated single-cell data with known ground truth.

:func:`simulate` draws negative-binomial counts with lineage, cell-type and
continuous-state gene programs, housekeeping and noise genes and varying
sequencing depth; :func:`truth_matrix` returns which genes are up in which cell
type, to score attribution recovery; :func:`write_simulated` writes a large
simulation to an ``.h5ad`` file or zarr store piece by piece.
"""

from __future__ import annotations

from ._simulate import ROLES, simulate, truth_matrix
from ._write import write_simulated

__all__ = ["simulate", "truth_matrix", "write_simulated", "ROLES"]
