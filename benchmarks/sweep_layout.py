"""Layout quality against training cost: input scaling, encoder size, steps, precision.

    python benchmarks/sweep_layout.py                    # the committed table (about 25 minutes on 2 cores)
    python benchmarks/sweep_layout.py --data pbmc digits  # a subset

Each data set is reduced once (50 PCs; digits: its 64 pixels, centred) and
given one exact kNN graph; then GlassBoxUMAP is fitted on that fixed graph
with each setting, and umap-learn runs on the same input. Every row reports
training time and the layout figures of ``gbumap.tl.quality`` (kNN
preservation, trustworthiness, label accuracy, radial anisotropy,
centroid-distance correlation and, for the simulation, within-type state R²
and the trajectory figures). The defaults (``input_norm="soft"``, 4 × 128
hidden units, ``training_precision="auto"``, ``auto_n_steps``) were chosen
from this table. Results: ``results/sweep_layout.{json,md}``.
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

from run import layout_quality, machine_info  # noqa: E402

WAVE1 = dict(input_norm="none", hidden_layers=(128, 128, 128), training_precision="full", n_steps=1000)
SETTINGS = [
    ("wave-1 defaults: no scaling, 3×128, full precision, 1,000 steps", WAVE1),
    ("input_norm='soft' (c = 0.5 × median |z|)", {**WAVE1, "input_norm": "soft"}),
    ("input_norm='soft', c = 0.25 × median |z|", {**WAVE1, "input_norm": "soft", "input_norm_scale": 0.25}),
    ("input_norm='l2'", {**WAVE1, "input_norm": "l2"}),
    ("soft, 3×128, 3,000 steps", {**WAVE1, "input_norm": "soft", "n_steps": 3000}),
    ("soft, 4×128 bf16-mixed, 1,000 steps", dict(n_steps=1000, training_precision="bf16-mixed")),
    ("new defaults: soft, 4×128 bf16-mixed, auto_n_steps", dict(training_precision="bf16-mixed")),
    ("soft, 4×128 bf16-mixed, 4,000 steps", dict(n_steps=4000, training_precision="bf16-mixed")),
    ("soft, 4×128 full precision, auto_n_steps", dict(training_precision="full")),
    ("soft, 3×256 bf16-mixed, 2,000 steps", dict(hidden_layers=(256,) * 3, n_steps=2000, training_precision="bf16-mixed")),
    ("soft, 4×256 bf16-mixed, 2,000 steps", dict(hidden_layers=(256,) * 4, n_steps=2000, training_precision="bf16-mixed")),
    ("soft, 4×128, batch 2,048 × 1,500 steps", dict(batch_size=2048, n_steps=1500, training_precision="bf16-mixed")),
    ("soft, 4×128, repulsion_strength 0.5", dict(repulsion_strength=0.5, training_precision="bf16-mixed")),
    ("soft, 4×128, learning_rate 0.02", dict(learning_rate=0.02, training_precision="bf16-mixed")),
]
# at 90k cells only the settings that decide the default (each fit there costs minutes)
LARGE = [SETTINGS[0], SETTINGS[1], SETTINGS[6], SETTINGS[7]]


def load(name: str) -> dict:
    """Input representation, labels and (for the simulation) the known continuous variables."""
    import scanpy as sc

    if name.startswith("sim"):
        import gbumap

        n = int(name[3:].replace("k", "000"))
        adata = gbumap.datasets.simulate(n, 2000, trajectory_fraction=0.1, random_state=0)
        sc.pp.pca(adata, n_comps=50)
        obs = adata.obs
        return {
            "rep": adata.obsm["X_pca"].astype(np.float32),
            "labels": obs["cell_type"].astype(str).to_numpy(),
            "state": obs["state"].to_numpy(np.float64),
            "time": obs["trajectory_time"].to_numpy(np.float64),
            "branch": obs["fate"].astype(str).where(obs["fate"].notna(), None).to_numpy(),
        }
    if name == "pbmc":
        adata = sc.datasets.pbmc68k_reduced()
        adata.X = adata.raw.X.copy()  # log-normalised expression
        sc.pp.pca(adata, n_comps=50)
        return {"rep": adata.obsm["X_pca"].astype(np.float32), "labels": adata.obs["bulk_labels"].astype(str).to_numpy()}
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return {"rep": (X - X.mean(0)).astype(np.float32), "labels": y.astype(str)}
    raise SystemExit(f"unknown data set {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["sim20k", "pbmc", "digits", "sim90k"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    import umap

    import gbumap
    from gbumap._graph import graph_from_knn, nearest_neighbors

    rows = []
    for name in args.data:
        data = load(name)
        rep = data["rep"]
        graph = graph_from_knn(*nearest_neighbors(rep, 15, random_state=0))
        t0 = time.perf_counter()
        reference = umap.UMAP(random_state=0).fit_transform(rep)
        rows.append({"data": name, "setting": "umap-learn (its own graph and layout)",
                     "seconds": time.perf_counter() - t0, **layout_quality(data, reference)})
        print(json.dumps(rows[-1]), flush=True)
        for label, params in LARGE if name == "sim90k" else SETTINGS:
            model = gbumap.GlassBoxUMAP(random_state=0, verbose=False, **params)
            model.fit(rep, graph=graph)
            rows.append({"data": name, "setting": label, "seconds": model.timings_["training"],
                         "n_steps": model.training_info_["n_steps"], **layout_quality(data, model.embedding_)})
            print(json.dumps(rows[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "rows": rows}
    (args.out / "sweep_layout.json").write_text(json.dumps(result, indent=2, default=float))
    (args.out / "sweep_layout.md").write_text(render(result) + "\n")
    print(render(result))
    return 0


def render(result: dict) -> str:
    info = result["machine"]
    lines = [
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores, GPU: {info['gpu']}), torch {info['torch']}. "
        "One fixed exact kNN graph per data set; time is training only (umap-learn: its whole fit). "
        "kNN pres. ratio = gbumap / umap-learn on the same data.",
        "",
    ]
    cols = [("knn_preservation", "kNN pres.@15", "{:.4f}"), ("trustworthiness", "trust.", "{:.3f}"),
            ("label_knn_accuracy", "label acc.", "{:.3f}"), ("radial_anisotropy", "anisotropy", "{:.2f}"),
            ("centroid_distance_spearman", "centroid ρ", "{:.2f}"), ("r2_state", "state R²", "{:.3f}"),
            ("trajectory_spearman", "traj. ρ", "{:.2f}"), ("trajectory_r2", "traj. R²", "{:.2f}")]
    for name in dict.fromkeys(r["data"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["data"] == name]
        present = [c for c in cols if c[0] in rows[0]]
        lines += [f"### {name}", "",
                  "| setting | time (s) | " + " | ".join(c[1] for c in present) + " | kNN pres. ratio |",
                  "| --- | ---: | " + " | ".join("---:" for _ in present) + " | ---: |"]
        ref = rows[0]["knn_preservation"]
        for r in rows:
            vals = " | ".join(fmt.format(r[key]) for key, _, fmt in present)
            lines.append(f"| {r['setting']} | {r['seconds']:.1f} | {vals} | {r['knn_preservation'] / ref:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
