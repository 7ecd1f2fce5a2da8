"""Read gbumap results back from an AnnData as data: models, contributions, summaries, rankings, checks."""

from ._contributions import contributions, reconstruction_error
from ._correction import batch_correction
from ._gene_sets import gene_set_scores
from ._modalities import modality_contributions
from ._model import model
from ._oriented import cell_contrast, oriented_contributions
from ._quality import quality
from ._rank import rank_features_df
from ._stability import stability_models
from ._summaries import mean_contributions, top_feature_groups

__all__ = [
    "batch_correction",
    "cell_contrast",
    "contributions",
    "gene_set_scores",
    "mean_contributions",
    "modality_contributions",
    "model",
    "oriented_contributions",
    "quality",
    "rank_features_df",
    "reconstruction_error",
    "stability_models",
    "top_feature_groups",
]

# Every function here also takes a MuData (its modalities read as one joint AnnData; see gbumap._mudata).
from .._mudata import accepts_mudata as _accepts_mudata  # noqa: E402

for _name in __all__:
    if callable(globals()[_name]) and not isinstance(globals()[_name], type):
        globals()[_name] = _accepts_mudata(globals()[_name])
del _name
