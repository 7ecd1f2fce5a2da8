"""Progress bars for long passes over cells (training, Jacobians, contributions)."""

from __future__ import annotations

__all__ = ["progress_bar"]

#: Passes over fewer cells finish too quickly for a bar to help.
MIN_CELLS = 50_000


def progress_bar(total: int, desc: str, verbose: bool, unit: str = "cell"):
    """A text ``tqdm`` bar, silent when ``verbose`` is false or ``total`` is small.

    Text bars, not ``tqdm.auto``: the latter warns in Jupyter without ipywidgets.
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not verbose or total < MIN_CELLS, leave=False)
