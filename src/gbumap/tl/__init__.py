"""Tools: fit glass-box UMAP models and compute results that are written into AnnData.

Each tool that computes a result writes one block in ``uns`` (by default under
a key such as ``"rank_features_<model key>"``; ``key_added=`` picks another),
tagged with its kind and version. A ``key_added`` that holds a fitted model or another kind of
result is refused before anything is computed, with an error that names the
key and the fix; see the AnnData page of the docs.
"""

from ._contrast import contrast
from ._contributions import contributions
from ._fit import fit
from ._gene_sets import gene_set_contributions
from ._interactions import interaction_modules
from ._knockouts import rank_knockouts
from ._perturb import perturb
from ._pipeline import glassbox_umap
from ._quality import quality
from ._randomization import randomization_check
from ._rank import SmallGroupWarning, rank_features
from ._stability import stability
from ._transform import transform

__all__ = [
    "contrast",
    "contributions",
    "fit",
    "gene_set_contributions",
    "glassbox_umap",
    "interaction_modules",
    "perturb",
    "quality",
    "randomization_check",
    "rank_features",
    "rank_knockouts",
    "SmallGroupWarning",
    "stability",
    "transform",
]

# Every function here also takes a MuData (its modalities read as one joint AnnData; see gbumap._mudata).
from .._mudata import accepts_mudata as _accepts_mudata  # noqa: E402

for _name in __all__:
    if callable(globals()[_name]) and not isinstance(globals()[_name], type):
        globals()[_name] = _accepts_mudata(globals()[_name])
del _name
