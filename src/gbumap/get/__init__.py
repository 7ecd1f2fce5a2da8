"""Read gbumap results back from an AnnData: models, contributions, checks."""

from ._contributions import contributions, reconstruction_error
from ._model import model

__all__ = ["contributions", "model", "reconstruction_error"]
