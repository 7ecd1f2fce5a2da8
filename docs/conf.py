"""Sphinx configuration for the gbumap documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
Notebooks under ``docs/tutorials/`` are rendered as saved, with the outputs
of a real run (``python tutorials/execute.py`` refreshes them); the docs
build never executes code.
"""

from __future__ import annotations

from datetime import date

import gbumap

project = "gbumap"
author = "gbumap developers"
copyright = f"{date.today().year}, {author}"
release = gbumap.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinxarg.ext",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# -- Notebooks: show the saved outputs, never execute during the build -------
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
# Docstrings are numpydoc; their parameter types come from the annotations,
# shown in the signature, one parameter per line when it gets long.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
maximum_signature_line_length = 88
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------
# "--layer" in command-line help must stay two hyphens, not an en dash
smartquotes_action = "qe"

html_theme = "furo"
html_title = f"gbumap {release}"
html_static_path: list[str] = []
