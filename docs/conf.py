"""Sphinx configuration for the gbumap documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
Notebooks under ``docs/tutorials/`` are rendered as saved, with the outputs
of a real run (``python tutorials/execute.py`` refreshes them); the docs
build never executes code.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import gbumap

HERE = Path(__file__).resolve().parent

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

# -- Pages written separately ------------------------------------------------
# The benchmark and scaling pages are written apart from the rest of the docs.
# Each joins the table of contents (and the FAQ's links) once its file exists,
# so the build passes with or without them. The marker lines below are
# replaced on reading; index and faq are re-read on every build so that an
# incremental build notices a page that has just appeared.
OPTIONAL_PAGES = {
    "performance": "{doc}`performance` has the measured speed, memory and embedding quality against umap-learn.",
    "scale": "{doc}`scale` shows what streams, the measured peak memory and how to work with backed (on-disk) data.",
}


def _optional_pages(app, docname, source):
    present = [name for name in OPTIONAL_PAGES if (HERE / f"{name}.md").exists()]
    if docname == "index":
        source[0] = source[0].replace("%optional-pages%", "\n".join(present))
    elif docname == "faq":
        source[0] = source[0].replace("%optional-links%", " ".join(OPTIONAL_PAGES[name] for name in present))


def _reread(app, env, added, changed, removed):
    return ["index", "faq"]


def setup(app):
    app.connect("source-read", _optional_pages)
    app.connect("env-get-outdated", _reread)


# -- HTML --------------------------------------------------------------------
# "--layer" in command-line help must stay two hyphens, not an en dash
smartquotes_action = "qe"

html_theme = "furo"
html_title = f"gbumap {release}"
html_static_path: list[str] = []
