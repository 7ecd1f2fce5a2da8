"""Run the tutorial notebooks and save copies with their outputs for the docs.

The notebooks in ``tutorials/`` are kept without outputs. This script runs
each one from a fresh kernel of the current Python, in a temporary folder
(anything a tutorial writes, such as ``.h5ad`` or ``.html`` files, stays
there), and saves the executed notebook to ``docs/tutorials/``, which the
documentation renders as is (the docs build never executes code)::

    python tutorials/execute.py                  # all tutorials
    python tutorials/execute.py basic_usage      # some of them
    python tutorials/execute.py --strip          # clear outputs in tutorials/ only

``tests/test_tutorials.py`` uses the same functions to run every tutorial
and to check that the executed copies in ``docs/tutorials/`` match the
current sources.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS_DIR = ROOT / "docs" / "tutorials"
KERNEL_NAME = "gbumap-tutorials"
CELL_TIMEOUT = 600

__all__ = ["notebooks", "execute", "strip_outputs", "same_cells", "main"]


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The tutorial notebooks, all of them or those named (with or without ``.ipynb``)."""
    found = sorted(HERE.glob("*.ipynb"))
    if not names:
        return found
    by_stem = {p.stem: p for p in found}
    missing = [n for n in names if Path(n).stem not in by_stem]
    if missing:
        raise SystemExit(f"no tutorial named {', '.join(missing)}; there are {', '.join(by_stem)}")
    return [by_stem[Path(n).stem] for n in names]


def _kernel_manager(spec_dir: Path):
    """A kernel manager that starts ipykernel with this very interpreter.

    The ``python3`` kernel spec found on a machine may point at another
    Python; a private spec pins the kernel to ``sys.executable`` so the
    notebooks see the same environment (and the same gbumap) as the caller.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernel_dir = spec_dir / KERNEL_NAME
    kernel_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gbumap tutorials)",
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def execute(path: Path, workdir: Path | None = None, timeout: int = CELL_TIMEOUT) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in ``workdir`` (a temporary folder by default).

    Raises ``nbclient.exceptions.CellExecutionError`` when a cell fails.
    Returns the executed notebook; the file at ``path`` is not modified.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="gbumap-kernel-") as spec_dir:
        with tempfile.TemporaryDirectory(prefix="gbumap-tutorial-") as tmp:
            run_dir = Path(workdir) if workdir is not None else Path(tmp)
            km = _kernel_manager(Path(spec_dir))
            client = NotebookClient(
                nb,
                km=km,
                timeout=timeout,
                resources={"metadata": {"path": str(run_dir)}},
                record_timing=False,
            )
            try:
                client.execute()
            finally:  # a kernel manager passed in is not shut down by nbclient
                if km.has_kernel:
                    km.shutdown_kernel(now=True)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def strip_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove outputs, execution counts and per-cell execution metadata (in place)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return nb


def same_cells(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """Whether two notebooks have the same cells (type and source), ignoring outputs."""
    return [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="tutorials to run (default: all)")
    parser.add_argument("--strip", action="store_true", help="only clear the outputs of the sources in tutorials/")
    args = parser.parse_args(argv)

    for path in notebooks(args.names):
        if args.strip:
            nb = strip_outputs(nbformat.read(path, as_version=4))
            nbformat.write(nb, path)
            print(f"stripped {path.relative_to(ROOT)}")
            continue
        start = time.perf_counter()
        nb = execute(path)
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        target = DOCS_DIR / path.name
        nbformat.write(nb, target)
        print(f"{path.relative_to(ROOT)} -> {target.relative_to(ROOT)} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
