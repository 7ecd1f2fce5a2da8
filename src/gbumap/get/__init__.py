"""Read gbumap results back from an AnnData as data: models, contributions, summaries, rankings, checks."""

from ._contributions import contributions, reconstruction_error
from ._model import model
from ._quality import quality
from ._rank import rank_features_df
from ._summaries import mean_contributions, top_feature_groups

__all__ = [
    "contributions",
    "mean_contributions",
    "model",
    "quality",
    "rank_features_df",
    "reconstruction_error",
    "top_feature_groups",
]
