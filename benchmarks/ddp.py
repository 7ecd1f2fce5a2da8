"""Multi-process (DDP) training on the CPU beside one process, with the same number of steps.

    python benchmarks/ddp.py                          # 30,000 simulated cells × 2,000 genes
    python benchmarks/ddp.py --n-cells 10000 --devices 2 --n-steps 1000

Simulates ``--n-cells`` cells (``gbumap.datasets.simulate``, 2,000 genes),
normalises, log-transforms and takes 50 PCs with scanpy, then fits
``GlassBoxUMAP`` on those PCs (``accelerator="cpu"``, the same seed and
``n_steps``) three ways: one process; ``devices=N`` processes under Lightning
Fabric's DDP (spawned, gloo; each step sees ``N × batch_size`` edges); and,
to tell "more edges per step" apart from "more processes", one process with
``batch_size × N``. The single process uses every core; each DDP process
``cores // N`` threads. Reports the wall time of ``fit``, of its training
stage (for DDP: starting the workers included) and of the training loop
itself, and the layout figures of ``gbumap._layout_metrics`` on one sample of
cells: kNN preservation@15 against the PCs and the 5-fold kNN-classifier
accuracy of ``obs["cell_type"]``. Writes ``results/ddp.{json,md}``.

The spawned workers re-import this file, hence the ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine_info  # noqa: E402

EVAL_CELLS = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-cells", type=int, default=30_000, help="simulated cells (default 30000)")
    parser.add_argument("--devices", type=int, default=2, help="DDP processes (default 2)")
    parser.add_argument("--n-steps", type=int, default=None, help="training steps (default: gbumap's for the size)")
    parser.add_argument("--batch-size", type=int, default=1024, help="edges per step and process (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for ddp.json and ddp.md")
    args = parser.parse_args()

    import scanpy as sc

    import gbumap
    from gbumap._layout_metrics import knn_preservation, label_accuracy
    from gbumap._schedule import auto_n_steps

    adata = gbumap.datasets.simulate(args.n_cells, 2000, random_state=0)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=50, random_state=0)
    pcs = np.asarray(adata.obsm["X_pca"], dtype=np.float32)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    sample = np.sort(np.random.default_rng(0).permutation(len(pcs))[: min(EVAL_CELLS, len(pcs))])
    n_steps = args.n_steps or auto_n_steps(len(pcs))

    runs = [
        ("1 process", dict(devices=1, batch_size=args.batch_size)),
        (f"{args.devices} processes (DDP)", dict(devices=args.devices, batch_size=args.batch_size)),
        (f"1 process, batch × {args.devices}", dict(devices=1, batch_size=args.batch_size * args.devices)),
    ]
    rows = []
    for name, params in runs:
        model = gbumap.GlassBoxUMAP(n_steps=n_steps, accelerator="cpu", random_state=args.seed, **params)
        start = time.perf_counter()
        emb = model.fit_transform(pcs)
        seconds = time.perf_counter() - start
        emb = np.asarray(emb, dtype=np.float64)
        rows.append({
            "run": name,
            **params,
            "n_steps": int(model.training_info_["n_steps"]),
            "strategy": model.training_info_["strategy"],
            "fit_s": seconds,
            "training_s": float(model.timings_["training"]),
            "loop_s": float(model.training_info_["seconds"]),
            "graph_s": float(model.timings_["graph"]),
            "knn_preservation": knn_preservation(pcs, emb, sample, k=15),
            "label_accuracy": label_accuracy(emb, labels, sample, k=15),
            "final_loss": float(np.mean(model.loss_history_[-50:])),
        })
        print(rows[-1], flush=True)

    info = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"n_cells": args.n_cells, "n_genes": 2000, "n_pcs": 50, "n_steps": n_steps, "seed": args.seed,
                "devices": args.devices, "batch_size": args.batch_size, "eval_cells": len(sample)}
    (args.out / "ddp.json").write_text(json.dumps({"machine": info, "settings": settings, "rows": rows}, indent=1))
    lines = [
        f"Measured {info['date']}, gbumap {info['gbumap']}, {info['cores']} cores ({info['cpu']}): "
        f"{args.n_cells:,} simulated cells × 2,000 genes, `GlassBoxUMAP` on 50 PCs, `accelerator=\"cpu\"`, "
        f"{n_steps} steps, seed {args.seed}. Training: the training stage of `fit` (for DDP, starting the workers "
        "included); loop: the training loop alone (rank 0). kNN preservation@15 against the PCs and 5-fold kNN "
        f"accuracy of `cell_type` on {len(sample):,} sampled cells.",
        "",
        "| run | edges per step | fit (s) | training (s) | loop (s) | kNN pres.@15 | label acc. | final loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['batch_size'] * r['devices']:,} | {r['fit_s']:.1f} | {r['training_s']:.1f} | "
            f"{r['loop_s']:.1f} | {r['knn_preservation']:.3f} | {r['label_accuracy']:.3f} | {r['final_loss']:.4f} |"
        )
    (args.out / "ddp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
