"""Preprocessing: prepare each modality of a multimodal data set by its convention, into a new layer."""

from ._modalities import normalize_modalities

__all__ = ["normalize_modalities"]

# Every function here also takes a MuData (its modalities read as one joint AnnData; see gbumap._mudata).
from .._mudata import accepts_mudata as _accepts_mudata  # noqa: E402

for _name in __all__:
    if callable(globals()[_name]) and not isinstance(globals()[_name], type):
        globals()[_name] = _accepts_mudata(globals()[_name])
del _name
