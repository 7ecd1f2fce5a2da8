"""Read gbumap results back from an AnnData: models, contributions, checks."""

from ._contributions import contributions, reconstruction_error
from ._model import model
from ._quality import quality
from ._rank import rank_features_df

__all__ = ["contributions", "model", "quality", "rank_features_df", "reconstruction_error"]
