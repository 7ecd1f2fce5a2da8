"""Plots of glass-box UMAP results.

Every function takes the AnnData first and follows scanpy's plotting
conventions (``key``/``basis``, ``groupby``, ``ax``, ``show``, ``save``,
``return_fig``, palettes from ``uns[f"{groupby}_colors"]``); scatter panels
are drawn by :func:`scanpy.pl.embedding`. Plotting never writes into the
AnnData it is given.

:func:`explore` writes a self-contained interactive HTML page and needs the
``interactive`` extra (``pip install gbumap[interactive]``, i.e. bokeh).
"""

from ._contrast import contrast
from ._contribution import contribution, feature_bars, mean_contributions
from ._correction import batch_correction
from ._explore import explore
from ._interactions import interaction_modules
from ._modalities import modality_shares
from ._oriented import oriented_contributions
from ._perturb import perturbation
from ._rank import rank_features
from ._reconstruction import reconstruction
from ._stability import stability
from ._top_features import top_feature_groups, top_features

__all__ = [
    "batch_correction",
    "contrast",
    "contribution",
    "explore",
    "feature_bars",
    "interaction_modules",
    "mean_contributions",
    "modality_shares",
    "oriented_contributions",
    "perturbation",
    "rank_features",
    "reconstruction",
    "stability",
    "top_feature_groups",
    "top_features",
]

# Every function here also takes a MuData (its modalities read as one joint AnnData; see gbumap._mudata).
from .._mudata import accepts_mudata as _accepts_mudata  # noqa: E402

for _name in __all__:
    if callable(globals()[_name]) and not isinstance(globals()[_name], type):
        globals()[_name] = _accepts_mudata(globals()[_name])
del _name
