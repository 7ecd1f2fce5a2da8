"""Read gbumap results back from an AnnData as data: models, contributions, summaries, rankings, checks."""

from ._contributions import contributions, reconstruction_error
from ._correction import batch_correction
from ._gene_sets import gene_set_scores
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
    "model",
    "oriented_contributions",
    "quality",
    "rank_features_df",
    "reconstruction_error",
    "stability_models",
    "top_feature_groups",
]
