"""Reading gene sets from GMT files (MSigDB, Enrichr, g:Profiler), without extra dependencies."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_gmt"]


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read gene sets from a GMT file.

    A GMT file holds one set per line, tab-separated: the set's name, a
    description (often a URL, ignored here), then its genes. Blank lines are
    skipped, whitespace around each field is removed, empty fields are
    ignored and a gene listed twice in a set is kept once, in its first place.

    Parameters
    ----------
    path
        The ``.gmt`` file (UTF-8).

    Returns
    -------
    dict
        ``{set name: [genes]}``, in the file's order.

    Raises
    ------
    ValueError
        For a line with fewer than three fields (name, description, at least
        one gene) or a set name seen on an earlier line, naming the line;
        for a file without any set.

    Examples
    --------
    >>> sets = gbumap.read_gmt("h.all.v2024.1.Hs.symbols.gmt")  # doctest: +SKIP
    >>> gbumap.tl.gene_set_contributions(adata, sets, groupby="bulk_labels")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GMT file {str(path)!r} not found.")
    sets: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split("\t")]
            name, genes = fields[0], [g for g in fields[2:] if g]
            if len(fields) < 3 or not name or not genes:
                raise ValueError(
                    f"{path.name}, line {number}: a GMT line needs at least 3 tab-separated fields "
                    f"(set name, description, genes...); got {len([f for f in fields if f])} non-empty "
                    f"field(s): {line.strip()[:80]!r}."
                )
            if name in sets:
                raise ValueError(
                    f"{path.name}, line {number}: set {name!r} was already defined on line {first_line[name]}; "
                    "set names must be unique. Rename or merge the two lines."
                )
            sets[name] = list(dict.fromkeys(genes))
            first_line[name] = number
    if not sets:
        raise ValueError(f"GMT file {str(path)!r} holds no gene sets (it has no non-blank line).")
    return sets
