"""Tools: fit glass-box UMAP models and compute results that are written into AnnData."""

from ._contrast import contrast
from ._contributions import contributions
from ._fit import fit
from ._pipeline import glassbox_umap
from ._quality import quality
from ._randomization import randomization_check
from ._rank import rank_features
from ._transform import transform

__all__ = [
    "contrast",
    "contributions",
    "fit",
    "glassbox_umap",
    "quality",
    "randomization_check",
    "rank_features",
    "transform",
]
