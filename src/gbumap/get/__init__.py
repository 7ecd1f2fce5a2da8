"""Read gbumap results back from an AnnData: models, contributions, checks."""

from ._contributions import contributions, reconstruction_error
from ._model import model
from ._quality import quality

__all__ = ["contributions", "model", "quality", "reconstruction_error"]
