"""Mutation check of the test suite: does it notice deliberate bugs?

    python benchmarks/mutants.py                 # every mutant (about 10 minutes on 2 cores)
    python benchmarks/mutants.py --only rank     # those whose name contains "rank"
    python benchmarks/mutants.py --check         # only verify that every mutant still applies

Each mutant is one small edit of the package source (a listed piece of code
replaced by a subtly wrong one). For each, the source tree is copied to a
temporary folder, the edit applied there, and the tests that guard that code
run against the copy (``PYTHONPATH`` puts it first, so the editable install
is not used). A mutant is *killed* when the tests fail and *survives* when
they pass. The repository itself is never modified. Results:
``results/mutants.{json,md}``, shown on the docs' testing page. Not part of
CI: each mutant costs a test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to src/gbumap
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


RANK_TESTS = ("tests/test_rankings.py", "tests/test_anndata.py", "tests/test_pl.py")
CONTRIB_TESTS = ("tests/test_paths.py", "tests/test_exactness.py", "tests/test_anndata.py")
FIT_TESTS = ("tests/test_paths.py", "tests/test_estimator.py", "tests/test_layout.py")
TRAIN_TESTS = ("tests/test_training.py", "tests/test_estimator.py", "tests/test_paths.py")

MUTANTS = [
    # ------------------------------------------------------------------ rankings (_ranking.py, behind tl.rank_features)
    Mutant("rank/accumulator_overwritten", "_ranking.py",
           "        sums += onehot.T @ per_cell\n", "        sums = onehot.T @ per_cell\n",
           RANK_TESTS, "per-batch sums overwritten instead of added"),
    Mutant("rank/square_accumulator_overwritten", "_ranking.py",
           "        sq += onehot.T @ per_cell**2\n", "        sq = onehot.T @ per_cell**2\n",
           RANK_TESTS, "per-batch sums of squares overwritten"),
    Mutant("rank/pvalue_sqrt", "_ranking.py",
           "    pvals = 2 * stats.t.sf(np.abs(t), dof)\n", "    pvals = np.sqrt(stats.t.sf(np.abs(t), dof))\n",
           RANK_TESTS, "p-values as the square root of the one-sided value"),
    Mutant("rank/pts_rest_over_all_cells", "_ranking.py",
           "    pts_rest = (tot_nz[None, :] - expr_nz) / safe_rest\n",
           "    pts_rest = np.broadcast_to(tot_nz / n_all, expr_nz.shape)\n",
           RANK_TESTS, "pts_rest computed over all cells instead of the rest"),
    Mutant("rank/weighted_mean_unclipped", "_ranking.py",
           "        statistic = mean_in * np.maximum(pts_in - pts_rest, 0.0)\n",
           "        statistic = mean_in * (pts_in - pts_rest)\n",
           RANK_TESTS, "negative detection contrast not clipped at 0"),
    Mutant("rank/weighted_mean_is_mean", "_ranking.py",
           "        statistic = mean_in * np.maximum(pts_in - pts_rest, 0.0)\n",
           "        statistic = mean_in\n",
           RANK_TESTS, "default score loses its detection weight"),
    Mutant("rank/variance_without_bessel", "_ranking.py",
           "    var_in = np.maximum(sq / n_in - mean_in**2, 0) * n_in / np.maximum(n_in - 1, 1)\n",
           "    var_in = np.maximum(sq / n_in - mean_in**2, 0)\n",
           RANK_TESTS, "group variance without Bessel's correction"),
    Mutant("rank/order_ascending", "_ranking.py",
           "    order = np.argsort(-statistic, axis=1, kind=\"stable\")[:, :keep]\n",
           "    order = np.argsort(statistic, axis=1, kind=\"stable\")[:, :keep]\n",
           RANK_TESTS, "genes sorted worst first"),
    # ------------------------------------------------------------------ contributions
    Mutant("attribution/degree_ignored", "_attribution.py",
           "    if degree != 1:\n        contrib = contrib / degree\n", "",
           ("tests/test_claims.py", "tests/test_encoder.py"), "degree-k encoders not divided by k"),
    Mutant("attribution/normed_l2_unnormalised", "_attribution.py",
           "        return (mag / total).astype(contrib.dtype)\n", "        return mag.astype(contrib.dtype)\n",
           ("tests/test_exactness.py",), "normed_l2 not divided by the cell's total"),
    Mutant("view/normed_l2_of_subset", "_view.py",
           "        whole = reduction == \"normed_l2\" and feature_idx is not None\n",
           "        whole = False\n",
           ("tests/test_paths.py", "tests/test_anndata.py"), "normed_l2 share taken over the asked genes only"),
    Mutant("view/reconstruction_last_batch_only", "_view.py",
           "        worst = max(worst, reconstruction_gap(contrib, emb[rows]))\n",
           "        worst = reconstruction_gap(contrib, emb[rows])\n",
           CONTRIB_TESTS, "reconstruction error of the last batch only"),
    Mutant("get/stored_jacobian_rows_shifted", "_view.py",
           "                jac = np.asarray(stored[rows])\n", "                jac = np.asarray(stored[rows - rows[0]])\n",
           CONTRIB_TESTS, "stored Jacobians read from the first rows for every batch"),
    Mutant("tl/contributions_batch_offset", "tl/_contributions.py",
           "            rows = slice(start, min(start + batch_size, n))\n",
           "            rows = slice(start, min(start + batch_size, n - 1))\n",
           CONTRIB_TESTS, "the last cell's Jacobian never written"),
    Mutant("estimator/input_norm_not_in_jacobian", "_estimator.py",
           "            jac /= divisor[:, :, None].astype(jac.dtype)\n", "            pass\n",
           ("tests/test_layout.py", "tests/test_exactness.py"), "Jacobian not divided by the input scale"),
    Mutant("estimator/input_norm_offset_zero", "_estimator.py",
           "        return float(self.input_norm_scale) * (median if median > 0 else 1.0)\n",
           "        return 0.0\n",
           ("tests/test_layout.py",), "soft scaling degenerates to unit norm"),
    # ------------------------------------------------------------------ fit: graph handling
    Mutant("fit/graph_ignored", "_estimator.py",
           "        if graph is not None:\n            graph = sp.csr_matrix(graph, dtype=np.float32)\n",
           "        if False:\n            graph = sp.csr_matrix(graph, dtype=np.float32)\n",
           FIT_TESTS, "a precomputed graph= ignored (built again)"),
    Mutant("fit/knn_ignored", "_estimator.py",
           "        if knn is not None:\n", "        if False:\n",
           FIT_TESTS, "a precomputed knn= ignored"),
    Mutant("fit/graph_on_scaled_input", "_estimator.py",
           "            Z_raw, self.n_neighbors, metric=self.metric, random_state=seed, verbose=self.verbose\n",
           "            self._scale_rows(Z_raw.copy()), self.n_neighbors, metric=self.metric, random_state=seed,\n"
           "            verbose=self.verbose\n",
           FIT_TESTS, "neighbours searched on the scaled input"),
    Mutant("graph/max_instead_of_fuzzy_union", "_graph.py",
           "    graph = (directed + transpose - prod).tocsr()\n", "    graph = directed.maximum(transpose).tocsr()\n",
           ("tests/test_graph.py",), "symmetrised by max instead of the fuzzy union"),
    # ------------------------------------------------------------------ training
    Mutant("training/lightning_ignored", "_training.py",
           "    if fabric is not None or config.engine == \"lightning\":\n", "    if fabric is not None:\n",
           TRAIN_TESTS, "engine='lightning' runs plain torch"),
    Mutant("training/no_repulsion", "_training.py",
           "    return attraction + repulsion_strength * negative_sample_rate * repulsion\n",
           "    return attraction\n",
           TRAIN_TESTS + ("tests/test_layout.py",), "negative samples dropped from the loss"),
    Mutant("training/negatives_from_heads_only", "_training.py",
           "    return torch.randint(0, n_embedded, (count,), generator=generator, device=generator.device)\n",
           "    return torch.randint(0, n_embedded // 2, (count,), generator=generator, device=generator.device)\n",
           TRAIN_TESTS, "negatives drawn among heads only (a silent change of the recipe)"),
    Mutant("training/edges_uniform", "_training.py",
           "    idx = torch.searchsorted(cdf, u).clamp_(max=cdf.numel() - 1)\n",
           "    idx = (u * cdf.numel()).long().clamp_(max=cdf.numel() - 1)\n",
           TRAIN_TESTS, "edges drawn uniformly instead of by weight"),
    Mutant("training/full_batch_negatives_among_few", "_training.py",
           "                neg_idx = sample_negatives(n_cells, B * nsr, gen)\n",
           "                neg_idx = sample_negatives(min(2 * B, n_cells), B * nsr, gen)\n",
           TRAIN_TESTS, "full batch draws negatives among the first cells only, as an edge batch would"),
    Mutant("schedule/full_batch_never", "_schedule.py",
           "        full_batch = int(devices) == 1 and int(n_cells) <= FULL_BATCH_MAX_CELLS\n",
           "        full_batch = False\n",
           TRAIN_TESTS, "small graphs silently trained on edge batches"),
    Mutant("optimizer/bias_correction_dropped", "_optimizer.py",
           "            p.addcdiv_(m, denom, value=-lr / bias1)\n", "            p.addcdiv_(m, denom, value=-lr)\n",
           ("tests/test_training.py",), "Adam without first-moment bias correction"),
    Mutant("training/bf16_in_full_precision", "_training.py",
           "    mixed = config.precision == \"bf16-mixed\"\n", "    mixed = False\n",
           ("tests/test_layout.py", "tests/test_determinism.py"), "bf16-mixed requested but full precision run"),
    # ------------------------------------------------------------------ layout metrics
    Mutant("metrics/anisotropy_total_variance", "_layout_metrics.py",
           "        var_along = float(along.var())\n", "        var_along = float((dev**2).sum(axis=1).mean())\n",
           ("tests/test_layout.py",), "radial variance replaced by the total variance"),
    Mutant("metrics/knn_counts_self", "_layout_metrics.py",
           "        row = row[row != q]  # the cell itself, wherever ties put it\n", "",
           ("tests/test_layout.py",), "a cell counted as its own neighbour"),
]


def apply(mutant: Mutant, root: Path) -> None:
    path = root / "gbumap" / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise RuntimeError(f"{mutant.name}: the code to mutate occurs {count} times in {mutant.file}; update the list")
    path.write_text(text.replace(mutant.old, mutant.new))


def run(mutant: Mutant, timeout: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gbumap-mutant-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
        apply(mutant, copy)
        env = dict(os.environ, PYTHONPATH=f"{copy}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            status = "killed" if proc.returncode != 0 else "survived"
            failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")][:1]
        except subprocess.TimeoutExpired:
            status, failed = "killed (timeout)", []
    return {"name": mutant.name, "what": mutant.what, "status": status, "seconds": time.perf_counter() - start,
            "caught_by": failed[0][7:].split(" - ")[0] if failed else ""}


def render(rows: list[dict]) -> str:
    killed = sum(r["status"].startswith("killed") for r in rows)
    lines = [f"Mutation score: **{killed} of {len(rows)} mutants killed ({killed / len(rows):.0%})**.", "",
             "| mutant | the deliberate bug | result | first failing test |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['what']} | {r['status']} | {r['caught_by'] or '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help="run the mutants whose name contains this text")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant's test run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or args.only in m.name]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for m in chosen:  # every edit must apply to the pristine source
            apply(m, copy)
            shutil.rmtree(copy)
            shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    if args.check:
        print(f"{len(chosen)} mutants apply")
        return 0
    rows = []
    for m in chosen:
        rows.append(run(m, args.timeout))
        print(f"{rows[-1]['status']:>16}  {m.name}  ({rows[-1]['seconds']:.0f} s) {rows[-1]['caught_by']}", flush=True)
    if args.only is None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mutants.json").write_text(json.dumps(rows, indent=2))
        (args.out / "mutants.md").write_text(render(rows) + "\n")
    print(render(rows))
    return 0 if all(r["status"].startswith("killed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
