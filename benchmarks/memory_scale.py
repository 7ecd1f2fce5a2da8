"""Peak memory of gbumap's inference paths as the number of cells grows.

For each data size (default 200,000 and 1,000,000 cells × 2,000 genes of
log-normalised sparse data from :func:`gbumap.datasets.simulate`), a model with
a 50-component PCA is fitted on a 20,000-cell subsample, and then, each in a
fresh subprocess, we measure the peak resident memory of

* ``load``: reading the ``.h5ad`` (the data themselves);
* ``jacobian``: ``model.input_jacobian(X)`` — the compressed, lossless
  contributions, ``(n, 2, 50)`` float32;
* ``transform``: ``model.transform(X)`` — ``(n, 2)``;
* ``contributions``: ``gbumap.get.contributions(adata, genes=<200 genes>,
  reduction="l2")`` — exact gene contributions, streamed in batches from the
  model and written into a preallocated ``(n, 200)`` output.

Each operation's number is its peak RSS minus the RSS once the data are loaded
(the peak is reset just before the operation through ``/proc/self/clear_refs``,
with a 5 ms sampler as a fallback), next to the size of the operation's output.
If the code streams, ``peak - output`` stays flat as ``n`` grows.

Usage::

    python benchmarks/memory_scale.py                       # everything, ~20 min for 1M cells
    python benchmarks/memory_scale.py --sizes 200000         # one size
    python benchmarks/memory_scale.py --workdir /tmp/gbm     # where the .h5ad files go

Writes ``benchmarks/results/memory_scale.json`` and ``memory_scale.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_GENES = 2_000
N_FIT = 20_000
N_PCS = 50
N_STEPS = 200
N_CONTRIB_GENES = 200
OPERATIONS = ("load", "jacobian", "transform", "contributions")


# --------------------------------------------------------------------------- memory probes
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak resident memory over a ``with`` block, in bytes.

    Resets the kernel's high-water mark (``VmHWM``) on entry by writing 5 to
    ``/proc/self/clear_refs``; where that is not allowed, a thread samples
    ``VmRSS`` every 5 ms instead (which can miss very short spikes).
    """

    def __enter__(self) -> PeakRSS:
        self.start = _status_kib("VmRSS") * 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 5 ms"
        self._sampled = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled = max(self._sampled, _status_kib("VmRSS") * 1024)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.end = _status_kib("VmRSS") * 1024
        hwm = _status_kib("VmHWM") * 1024 if self.method.startswith("VmHWM") else 0
        self.peak = max(hwm, self._sampled, self.end)


# --------------------------------------------------------------------------- stages
def prepare(workdir: Path, sizes: list[int]) -> dict:
    """Simulate the largest size once (smaller sizes are its first cells), write .h5ad files, fit the model."""
    import anndata as ad
    import numpy as np

    import gbumap

    workdir.mkdir(parents=True, exist_ok=True)
    record = workdir / "prepare.json"
    info: dict = json.loads(record.read_text()) if record.exists() else {}
    todo = [n for n in sizes if not (workdir / f"data_{n}.h5ad").exists()]
    model_path = workdir / "model.h5ad"
    if todo or not model_path.exists():
        t0 = time.perf_counter()
        # simulate(n) equals the first n cells of simulate(N): simulate once, slice the rest
        full = gbumap.datasets.simulate(max(sizes), N_GENES, n_jobs=os.cpu_count() or 1, random_state=0)
        del full.layers["counts"]
        full.obs = full.obs[["cell_type"]]
        full.var = full.var[["role"]]
        full.uns = {}
        info["simulate_seconds"] = time.perf_counter() - t0
        for n in todo:
            part = full if n == full.n_obs else full[:n].copy()
            part.write_h5ad(workdir / f"data_{n}.h5ad")
            print(f"wrote data_{n}.h5ad ({part.X.nnz / (n * N_GENES):.1%} non-zero)", flush=True)
            del part
        if not model_path.exists():
            rng = np.random.default_rng(0)
            sub = full[np.sort(rng.choice(min(sizes), size=N_FIT, replace=False))].copy()
            t0 = time.perf_counter()
            gbumap.tl.fit(sub, mask_var=False, n_pcs=N_PCS, n_steps=N_STEPS, verbose=False, random_state=0)
            info["fit_seconds"] = time.perf_counter() - t0
            ad.AnnData(uns={"gbumap": sub.uns["gbumap"]}).write_h5ad(model_path)
        del full
        record.write_text(json.dumps(info))
    return info


def measure(workdir: Path, n: int, operation: str) -> dict:
    """One measurement; meant to run in a fresh process."""
    import anndata as ad
    import numpy as np
    import torch

    import gbumap

    torch.set_num_threads(os.cpu_count() or 1)
    registry = ad.read_h5ad(workdir / "model.h5ad").uns["gbumap"]
    model = gbumap.get.model(ad.AnnData(uns={"gbumap": registry}))
    # warm up torch and the code paths on a few cells so one-off allocations are not counted
    warm = np.random.default_rng(0).random((64, N_GENES), dtype=np.float32)
    model.transform(warm), model.input_jacobian(warm), model.compute_contributions(warm[:8], reduction="l2")

    with PeakRSS() as load:
        adata = ad.read_h5ad(workdir / f"data_{n}.h5ad")
    X = adata.X
    data_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    result = {
        "n_cells": n,
        "operation": operation,
        "data_bytes": int(data_bytes),
        "density": float(X.nnz / (n * N_GENES)),
        "rss_before_load": load.start,
        "rss_after_load": load.end,
        "method": load.method,
    }
    if operation == "load":
        # for load, the increase is over the RSS before loading, and the "output" is the CSR matrix
        result.update(peak_minus_loaded=load.peak - load.start, output_bytes=int(data_bytes), seconds=load.seconds)
        return result

    adata.uns["gbumap"] = registry
    genes = adata.var_names[:: N_GENES // N_CONTRIB_GENES][:N_CONTRIB_GENES]
    with PeakRSS() as run:
        if operation == "jacobian":
            out = model.input_jacobian(X)
        elif operation == "transform":
            out = model.transform(X)
        elif operation == "contributions":
            out = gbumap.get.contributions(adata, genes=genes, reduction="l2")
        else:
            raise ValueError(operation)
    assert np.isfinite(out).all()
    result.update(
        peak_minus_loaded=run.peak - run.start,
        output_bytes=int(out.nbytes),
        output_shape=list(out.shape),
        seconds=run.seconds,
    )
    return result


# --------------------------------------------------------------------------- reporting
def _machine() -> dict:
    import numpy
    import scipy
    import torch

    import gbumap

    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    from importlib.metadata import version

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": {
            "gbumap": gbumap.__version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "anndata": version("anndata"),
        },
    }


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def write_report(results: list[dict], meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "memory_scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    m = meta["machine"]
    lines = [
        "# Peak memory of gbumap inference vs number of cells",
        "",
        f"Machine: {m['nproc']} CPU cores, {m['ram_gib']} GiB RAM, no GPU; Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; {m['date']}.",
        "",
        f"Data: `gbumap.datasets.simulate(n, {N_GENES})`, log-normalised CSR float32 "
        f"(~{results[0]['density']:.0%} non-zero). Model: `tl.fit` on {N_FIT:,} cells, "
        f"{N_PCS} PCs folded in, {N_STEPS} steps. Each row is a fresh process; "
        "'peak increase' is peak RSS minus RSS with the data loaded (for `load`: minus RSS before loading).",
        "",
        "| cells | operation | output | output MiB | peak increase MiB | peak − output MiB | seconds |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        shape = "×".join(map(str, r.get("output_shape", ["CSR data"])))
        lines.append(
            f"| {r['n_cells']:,} | {r['operation']} | {shape} | {_mib(r['output_bytes'])} | "
            f"{_mib(r['peak_minus_loaded'])} | {_mib(r['peak_minus_loaded'] - r['output_bytes'])} | "
            f"{r['seconds']:.1f} |"
        )
    lines += [
        "",
        f"Peak measured with {results[0]['method']}. Seconds are wall-clock time on a machine shared with "
        "other jobs: indicative only.",
        "",
    ]
    (out_dir / "memory_scale.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gbumap_memory_scale"))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--operations", nargs="+", default=list(OPERATIONS), choices=OPERATIONS)
    parser.add_argument("--_measure", nargs=2, metavar=("N", "OPERATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        n, op = args._measure
        print(json.dumps(measure(args.workdir, int(n), op)))
        return

    sizes = sorted(args.sizes)
    t0 = time.perf_counter()
    prep = prepare(args.workdir, sizes)
    print(f"prepared in {time.perf_counter() - t0:.0f} s {prep}", flush=True)
    results = []
    for n in sizes:
        for op in args.operations:
            proc = subprocess.run(
                [sys.executable, __file__, "--workdir", str(args.workdir), "--_measure", str(n), op],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"measurement {n} {op} failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"{n:>9,} {op:<14} peak +{_mib(r['peak_minus_loaded']):>7} MiB  "
                f"output {_mib(r['output_bytes']):>7} MiB  {r['seconds']:.1f} s",
                flush=True,
            )
            write_report(results, {"machine": _machine(), "prepare": prep}, args.out)


if __name__ == "__main__":
    main()
