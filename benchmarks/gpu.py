"""Training on a GPU, and two-process DDP on the CPU, on the same graph: seconds and layout quality.

    python benchmarks/gpu.py                 # on a machine with a CUDA GPU (93 s on one H200 with 16 cores)
    python benchmarks/gpu.py --cells 50000   # smaller

The data are a Gaussian mixture (40 clusters of unequal size and spread in 50
dimensions), so the script needs only numpy, scipy, torch, scikit-learn,
Lightning and Dask (no AnnData or scanpy): it is meant to be carried to a GPU
machine as it is. One kNN graph is built first and reused by every run, so
the runs differ only in where training happens:

* ``cuda``: one GPU (float32 and ``training_precision="bf16-mixed"``);
* ``cpu``: one process on all CPU cores;
* ``cpu, devices=2``: two DDP processes on the CPU (gloo), each with half the
  cores and the same steps, so each step sees twice the edges.

Quality: kNN-classifier accuracy of the cluster labels and kNN preservation@15
(against the 50-D input) on a 10,000-cell sample. Writes ``results/gpu.json``
and ``results/gpu.md`` (or to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def mixture(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, 50)) * 4.0
    weights = rng.uniform(0.3, 3.0, 40)
    labels = rng.choice(40, size=n, p=weights / weights.sum())
    spread = rng.uniform(0.5, 1.5, 40)[labels, None]
    return (centres[labels] + spread * rng.standard_normal((n, 50))).astype(np.float32), labels


def main() -> None:
    from gbumap import GlassBoxUMAP
    from gbumap._layout_metrics import knn_preservation, label_accuracy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    X, labels = mixture(args.cells)
    t0 = time.perf_counter()
    reference = GlassBoxUMAP(accelerator="cpu", n_steps=1).fit(X)
    graph_seconds = reference.timings_["graph"]
    graph = reference.graph_
    sample = np.random.default_rng(1).choice(args.cells, size=min(10_000, args.cells), replace=False)
    runs = []
    configs = [("cpu", dict(accelerator="cpu")), ("cpu, devices=2", dict(accelerator="cpu", devices=2))]
    if torch.cuda.is_available():
        configs = [
            ("cuda", dict(accelerator="cuda", training_precision="full")),
            ("cuda, bf16-mixed", dict(accelerator="cuda", training_precision="bf16-mixed")),
        ] + configs
    for name, params in configs:
        model = GlassBoxUMAP(n_steps=args.steps, random_state=0, **params).fit(X, graph=graph)
        emb = model.embedding_
        runs.append({
            "training": name,
            "seconds": float(model.timings_["training"]),
            "steps": int(model.training_info_["n_steps"]),
            "label_accuracy": label_accuracy(emb, labels, sample),
            "knn_preservation": knn_preservation(X[sample], emb[sample], np.arange(len(sample))[:5000]),
            "reconstruction_max_rel": float(model.reconstruction_error(X[:5000])["max_rel"]),
        })
        print(json.dumps(runs[-1]), flush=True)
    info = {
        "cells": args.cells,
        "graph_seconds_cpu": graph_seconds,
        "setup_seconds": time.perf_counter() - t0,
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(info, indent=1))
    lines = [
        f"{args.cells:,} cells (Gaussian mixture, 50 dims), {args.steps} steps, one shared graph; "
        f"{info['cpu_cores']} CPU cores, GPU: {info['gpu']}, torch {info['torch']}.",
        "",
        "| training | seconds | label acc. | kNN pres.@15 | max rel. gap |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['training']} | {r['seconds']:.1f} | {r['label_accuracy']:.3f} | {r['knn_preservation']:.4f} | "
        f"{r['reconstruction_max_rel']:.1e} |"
        for r in runs
    ]
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
