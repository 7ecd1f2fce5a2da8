"""How big each part of a fit gets at 10M cells, and where it lives (workers or client): docs/scale.md.

The sizes are computed from the arrays' shapes and dtypes as gbumap allocates them
(defaults: 50 PCs, 10 oversamples, 15 neighbours, 2-D embedding, float32 model). The
neighbour graph's non-zeros per cell are measured on a fit of simulated cells (the fuzzy
union of a 15-NN graph: at most 2 x 14 per cell) and scaled to 10M cells.

    python benchmarks/cluster_sizes.py            # about a minute on 2 cores
"""

from __future__ import annotations

import json
from pathlib import Path

N_CELLS = 10_000_000
N_GENES = 2_000
N_PCS, OVERSAMPLES, K, N_COMPONENTS = 50, 10, 15, 2
CHUNK_ROWS = 8192
DENSITY = 0.22  # simulated log-normalised data (docs/scale.md)


def mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def measured_graph_nnz_per_cell(n_cells: int = 30_000) -> float:
    import gbumap
    from gbumap.datasets import simulate

    adata = simulate(n_cells, N_GENES, random_state=0)
    est = gbumap.GlassBoxUMAP(pca_components=N_PCS, n_neighbors=K, n_steps=10, verbose=False).fit(adata.X)
    return est.graph_.nnz / n_cells, est.graph_.indices.dtype.itemsize, est.graph_.data.dtype.itemsize


def main() -> None:
    nnz_per_cell, index_bytes, value_bytes = measured_graph_nnz_per_cell()
    n, q = N_CELLS, N_PCS + OVERSAMPLES
    graph_nnz = nnz_per_cell * n
    nnz_X = DENSITY * n * N_GENES
    rows = {
        # on the workers, per row chunk (one chunk at a time per worker thread)
        "worker: one CSR chunk of X (8,192 cells, float32 values + int32 indices)": DENSITY * CHUNK_ROWS * N_GENES * 8,
        "worker: one chunk densified (8,192 x 2,000 float32)": CHUNK_ROWS * N_GENES * 4,
        "worker: one chunk's Jacobians (8,192 x 2 x 50 float32)": CHUNK_ROWS * N_COMPONENTS * N_PCS * 4,
        # on the client
        "client: X @ V of the PCA (cells x 60 float64), per product": n * q * 8,
        "client: projection Z (cells x 50 float32)": n * N_PCS * 4,
        "client: kNN indices (cells x 15 int64)": n * K * 8,
        "client: kNN distances (cells x 15 float32)": n * K * 4,
        "client: fuzzy graph (CSR: nnz x (float32 + int32) + indptr)": graph_nnz * (value_bytes + index_bytes)
        + (n + 1) * 8,
        "client: embedding (cells x 2 float32)": n * N_COMPONENTS * 4,
        "client or store: Jacobians (cells x 2 x 50 float32)": n * N_COMPONENTS * N_PCS * 4,
        "for scale: X itself (CSR, 22 % non-zero, float32 + int32)": nnz_X * 8 + (n + 1) * 8,
    }
    out = {
        "n_cells": N_CELLS,
        "graph_nnz_per_cell_measured": round(nnz_per_cell, 2),
        "graph_nnz": int(graph_nnz),
        "MiB": {k: mib(v) for k, v in rows.items()},
    }
    print(json.dumps(out, indent=1))
    Path(__file__).parent.joinpath("results", "cluster_sizes.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
