"""Parameter descriptions shared by docstrings of ``tl``, ``get`` and ``pl`` (as scanpy's ``_doc_params``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

SHOW_SAVE = """\
    show
        Show the figure; ``None`` shows it only in matplotlib's interactive mode.
    save
        Path to write the figure to (``True``: ``sc.settings.figdir``).
    return_fig
        Return the matplotlib figure."""

MODEL_GROUPBY = """\
    adata
        AnnData with a fitted model under ``key``.
    groupby
        Categorical ``obs`` column defining the groups."""

CELL_SELECTION = """\
    obs
        Cells: ``None`` (all), a boolean mask, obs names or integer positions.
    groupby, group
        Restrict to the cells whose ``obs[groupby]`` is ``group`` (one name
        or several); combined with ``obs`` when both are given."""

PBMC_EXAMPLE = """\
    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.glassbox_umap(adata, n_steps=60, verbose=False)"""

KEY_BATCH = """\
    key
        The model key.
    batch_size
        Cells per batch."""

BATCH_COPY = """\
    batch_size
        Cells per batch (memory stays bounded by it).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------"""

ENCODER_SIZES = """\
    n_inputs
        Number of input features (genes or principal components).
    n_outputs
        Embedding dimension."""


def doc_params(**blocks: str) -> Callable[[F], F]:
    """Replace ``{name}`` lines in the docstring with the shared block ``name``.

    Plain replacement rather than ``str.format``, so docstrings keep literal
    braces such as ``uns[f"{groupby}_colors"]``.
    """

    def decorate(func: F) -> F:
        doc = func.__doc__ or ""
        for name, text in blocks.items():
            marker = "    {" + name + "}"
            if marker not in doc:
                raise ValueError(f"{func.__name__}'s docstring has no {marker.strip()} line")
            doc = doc.replace(marker, text)
        func.__doc__ = doc
        return func

    return decorate


def figure_returns(axes: str) -> str:
    """The Returns section of a plot's docstring; ``axes`` names what comes back without a figure."""
    return f"""\
    Returns
    -------
    The figure with ``return_fig=True``; ``None`` when shown; else {axes}."""
