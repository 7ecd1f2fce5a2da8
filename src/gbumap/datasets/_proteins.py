"""Surface proteins (CITE-seq antibody tags) for the simulator, with known markers.

The protein design, on top of the simulated RNA:

* each lineage has :data:`PROTEINS_PER_LINEAGE` marker proteins, up in every
  cell of the lineage; so the cell types of one lineage share their protein
  profile and differ in RNA only;
* each *split* type (the first type, ``L<i>_T0``, of each of the first
  ``protein_split_types`` lineages) is split at random, half and half, into
  two subtypes ``L<i>_T0_P0`` and ``L<i>_T0_P1`` with
  :data:`PROTEINS_PER_SUBTYPE` markers each: identical RNA, different
  proteins (as surface markers separate T-cell subsets that RNA blurs);
* the other proteins are background: ambient counts, no structure.

Protein counts are negative binomial with mean ``s_c · μ_p · exp(β)``: ``μ_p``
the protein's background (log-normal around ``protein_background``), ``β``
its fold change in the cell's lineage or subtype, ``s_c`` a log-normal size
factor of the cell's own (sigma ``depth_sigma``, mean 1), independent of its
RNA depth. The design comes from spawn key ``(5,)`` of the seed and the cells
of block ``i`` from ``(6, i)``, so adding proteins leaves every RNA value
unchanged, and the counts of ``simulate(n)`` are the first ``n`` cells of
``simulate(N)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["PROTEINS_PER_LINEAGE", "PROTEINS_PER_SUBTYPE", "clr", "min_proteins", "with_proteins"]

PROTEINS_PER_LINEAGE = 3
PROTEINS_PER_SUBTYPE = 3
_BLOCK = 1024
_BACKGROUND_SIGMA = 0.5


def min_proteins(n_lineages: int, protein_split_types: int) -> int:
    """The fewest proteins the design needs."""
    return PROTEINS_PER_LINEAGE * n_lineages + 2 * PROTEINS_PER_SUBTYPE * protein_split_types


@dataclass(frozen=True)
class _ProteinDesign:
    log_background: np.ndarray  # (n_proteins,) log mean at size factor 1
    lfc: np.ndarray  # (n_proteins,) natural-log fold change where the protein is a marker (0 for background)
    lineage_markers: list[np.ndarray]  # per lineage: its marker proteins
    split_types: list[str]  # the types split by protein
    subtype_markers: dict[str, np.ndarray]  # subtype name -> its marker proteins
    role: np.ndarray  # (n_proteins,) "lineage", "subtype" or "background"
    program: np.ndarray  # (n_proteins,) the lineage or subtype it marks, "" for background


def _design(n_proteins: int, lineages: list[str], n_split: int, lfc: float, spread: float, background: float,
            seed: int) -> _ProteinDesign:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5,)))
    order = rng.permutation(n_proteins)
    role = np.full(n_proteins, "background", dtype=object)
    program = np.full(n_proteins, "", dtype=object)
    pos = 0
    lineage_markers = []
    for name in lineages:
        idx = np.sort(order[pos : pos + PROTEINS_PER_LINEAGE])
        pos += PROTEINS_PER_LINEAGE
        lineage_markers.append(idx)
        role[idx], program[idx] = "lineage", name
    split_types = [f"{name}_T0" for name in lineages[:n_split]]
    subtype_markers = {}
    for t in split_types:
        for half in ("P0", "P1"):
            idx = np.sort(order[pos : pos + PROTEINS_PER_SUBTYPE])
            pos += PROTEINS_PER_SUBTYPE
            subtype_markers[f"{t}_{half}"] = idx
            role[idx], program[idx] = "subtype", f"{t}_{half}"
    effects = np.where(role != "background", lfc * rng.uniform(1 - spread, 1 + spread, n_proteins), 0.0)
    log_bg = np.log(background) + rng.normal(0.0, _BACKGROUND_SIGMA, n_proteins)
    return _ProteinDesign(log_bg, effects, lineage_markers, split_types, subtype_markers,
                          role.astype(str), program.astype(str))


def clr(counts: sp.csr_matrix) -> np.ndarray:
    """Centred log-ratio per protein across cells, muon's ``prot.pp.clr(axis=0)`` (Seurat's flavour).

    ``log1p(x / exp(mean over cells of log1p(x)))``; written here so the
    simulator does not need muon (``tests/test_simulator.py`` checks it
    against muon's where muon is installed).
    """
    dense = counts.toarray().astype(np.float64)
    scale = np.exp(np.log1p(dense).mean(axis=0))
    return np.log1p(dense / scale).astype(np.float32)


def with_proteins(
    rna: ad.AnnData,
    *,
    n_proteins: int,
    protein_split_types: int,
    protein_lfc: float,
    protein_background: float,
    protein_dispersion: float,
    lfc_spread: float,
    depth_sigma: float,
    lineages: list[str],
    seed: int,
    first_cell: int,
) -> ad.AnnData:
    """``rna`` with ``n_proteins`` proteins appended as features (``var["feature_types"]`` ``"GEX"``/``"ADT"``)."""
    design = _design(n_proteins, lineages, protein_split_types, protein_lfc, lfc_spread, protein_background, seed)
    n = rna.n_obs
    cell_type = rna.obs["cell_type"].astype(str).to_numpy()
    lineage = rna.obs["lineage"].astype(str).to_numpy()
    subtype = cell_type.astype(object).copy()
    size = np.empty(n)
    counts = np.empty((n, n_proteins), dtype=np.float32)
    theta = 1.0 / protein_dispersion
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block_index = (first_cell + start) // _BLOCK
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(6, block_index)))
        m = stop - start
        # draws for a whole block, then its first m cells: a cell's values do not depend on where the data end
        half = rng.integers(0, 2, _BLOCK)[:m]
        sf = np.exp(rng.normal(-0.5 * depth_sigma**2, depth_sigma, _BLOCK))[:m]
        gamma_u = rng.standard_gamma(theta, (_BLOCK, n_proteins))[:m]
        poisson_u = rng.random((_BLOCK, n_proteins))[:m]
        log_mu = np.tile(design.log_background, (m, 1))
        for j in range(m):
            c = start + j
            li = lineages.index(lineage[c]) if lineage[c] in lineages else -1
            if li >= 0 and cell_type[c] != "progenitor":
                cols = design.lineage_markers[li]
                log_mu[j, cols] += design.lfc[cols]
            if cell_type[c] in design.split_types:
                subtype[c] = f"{cell_type[c]}_P{half[j]}"
                cols = design.subtype_markers[subtype[c]]
                log_mu[j, cols] += design.lfc[cols]
        mu = sf[:, None] * np.exp(log_mu)
        lam = gamma_u * (mu / theta)
        from scipy import stats

        counts[start:stop] = stats.poisson.ppf(poisson_u, lam).astype(np.float32)
        size[start:stop] = sf
    prot_counts = sp.csr_matrix(counts)
    names = np.array([f"prot_{i:0{len(str(n_proteins - 1))}d}" for i in range(n_proteins)])
    obs = rna.obs.copy()
    labels = list(rna.obs["cell_type"].cat.categories)
    sub_labels = []
    for t in labels:
        sub_labels.extend([f"{t}_P0", f"{t}_P1"] if t in design.split_types else [t])
    obs["subtype"] = pd.Categorical(subtype.astype(str), categories=sub_labels)
    obs["protein_size_factor"] = size.astype(np.float32)
    obs["n_protein_counts"] = np.asarray(prot_counts.sum(axis=1)).ravel().astype(np.float32)
    var_rna = rna.var.copy()
    var_prot = pd.DataFrame(index=pd.Index(names))
    for col in var_rna.columns:
        kind = var_rna[col].dtype
        if isinstance(kind, pd.CategoricalDtype):
            var_prot[col] = pd.Categorical(["protein" if col == "role" else ""] * n_proteins)
        elif pd.api.types.is_bool_dtype(kind):
            var_prot[col] = False
        elif pd.api.types.is_object_dtype(kind):
            var_prot[col] = ""
        else:
            var_prot[col] = np.zeros(n_proteins, dtype=kind)
    var_prot["program"] = design.program
    var_prot["lfc"] = design.lfc.astype(var_rna["lfc"].dtype)
    var_prot["base_mean"] = np.exp(design.log_background).astype(var_rna["base_mean"].dtype)
    var_prot["dispersion"] = np.full(n_proteins, protein_dispersion, dtype=var_rna["dispersion"].dtype)
    var = pd.concat([var_rna, var_prot])
    if "role" in var_rna.columns:
        cats = list(var_rna["role"].cat.categories) + ["protein"]
        var["role"] = pd.Categorical(list(var_rna["role"].astype(str)) + ["protein"] * n_proteins, categories=cats)
    var["protein_role"] = pd.Categorical([""] * rna.n_vars + list(design.role),
                                         categories=["", "lineage", "subtype", "background"])
    var["feature_types"] = pd.Categorical(["GEX"] * rna.n_vars + ["ADT"] * n_proteins, categories=["GEX", "ADT"])
    X = sp.hstack([rna.X, sp.csr_matrix(clr(prot_counts))], format="csr", dtype=np.float32)
    layers = {"counts": sp.hstack([rna.layers["counts"], prot_counts], format="csr", dtype=np.float32)}
    uns = dict(rna.uns)
    sim = dict(uns["simulation"])
    sim["protein_truth"] = {
        **{name: names[cols] for name, cols in zip(lineages, design.lineage_markers)},
        **{name: names[cols] for name, cols in design.subtype_markers.items()},
    }
    params = dict(sim["params"])
    params.update(n_proteins=n_proteins, protein_split_types=protein_split_types, protein_lfc=protein_lfc,
                  protein_background=protein_background, protein_dispersion=protein_dispersion)
    sim["params"] = params
    uns["simulation"] = sim
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns, layers=layers)
