"""A negative-binomial single-cell simulator with known per-type marker genes.

The design is deliberately *hard* for naive attribution scores:

* every cell type belongs to a lineage, and all types of a lineage share a
  lineage program (genes up in every type of that lineage);
* every type has its own program (genes up only in that type);
* every type has a continuous state: a pseudotime ``t ∈ [0, 1]`` per cell
  ramps a set of type-specific genes up, so neighbourhoods inside a type carry
  structure;
* housekeeping genes are highly expressed in every cell, so the mean
  expression alone points at them rather than at the programs;
* pure-noise genes are strongly over-dispersed (high variance, no structure);
* sequencing depth varies from cell to cell (log-normal size factors);
* optionally, a share of the cells lies on a branching differentiation
  trajectory: progenitors with a progenitor program, near the average cell,
  moving towards one mature type per lineage with a known time;
* optionally, cells come in batches (donors, sites): each batch shifts its own
  share of the genes by known fold changes and has its own sequencing depth,
  and the genes that only the batch moves are recorded.

Counts are generated block by block and assembled into CSR matrices, so the
full ``n_cells × n_genes`` dense matrix never exists.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._proteins import min_proteins, with_proteins

__all__ = ["simulate", "truth_matrix", "ROLES"]

#: Gene roles, in the order of the categories of ``var["role"]``.
ROLES: tuple[str, ...] = ("housekeeping", "lineage", "type", "state", "noise", "background", "progenitor")

#: Cell-type label of the trajectory cells before they commit (time below this).
PROGENITOR = "progenitor"
_COMMIT_TIME = 1.0 / 3.0

# Cells are drawn in fixed blocks of this many cells, each with its own random
# stream (spawn key ``(1, block_index)`` of ``SeedSequence(random_state)``).
# The output therefore does not depend on ``chunk_size`` or ``n_jobs``.
_SEED_BLOCK = 1024
# Entries whose NB mean exceeds this are sampled as Gamma-Poisson mixtures;
# the (many) entries below it by inverting the NB CDF from one exponential
# variate, which costs almost nothing for the zeros that dominate the matrix.
_MU_HIGH = 8.0
# Base means (before rescaling to ``depth_mean``): log-normal medians / sigmas.
_HK_MEDIAN, _HK_SIGMA = 8.0, 0.5
_BG_MEDIAN, _BG_SIGMA = 0.06, 0.9
_NOISE_MEDIAN, _NOISE_SIGMA = 0.5, 0.7
# Gene-to-gene spread (log-normal sigma) of the dispersion around its setting.
_DISPERSION_SIGMA = 0.25
_TARGET_SUM = 1e4


@dataclass(frozen=True)
class _Design:
    """Everything shared by all cells: gene roles, means and dispersions."""

    type_means: np.ndarray  # (n_types, n_genes) float32 mean at size factor 1 and t = 0
    theta: np.ndarray  # (n_genes,) float32 NB size (1 / dispersion)
    state_cols: list[np.ndarray]  # per type: indices of its state genes
    state_lfc: list[np.ndarray]  # per type: natural-log fold change at t = 1
    type_cdf: np.ndarray  # (n_types,) cumulative cell-type proportions
    depth_sigma: float
    trajectory: _Trajectory | None = None
    batches: _Batches | None = None


@dataclass(frozen=True)
class _Trajectory:
    """The branching trajectory: a progenitor state and one branch per fate."""

    fraction: float  # share of cells drawn on the trajectory
    log_base: np.ndarray  # (n_genes,) float64 log mean at size factor 1 without any program
    progenitor_effect: np.ndarray  # (n_genes,) log fold changes of the progenitor program
    fate_effect: np.ndarray  # (n_fates, n_genes) log fold changes of each fate's programs
    fate_type: np.ndarray  # (n_fates,) index of each fate's mature type


@dataclass(frozen=True)
class _Batches:
    """The batch design: each batch's shifted genes, their fold changes and its depth."""

    n_batches: int
    cols: list[np.ndarray]  # per batch: indices of the genes it shifts
    factor: list[np.ndarray]  # per batch: float32 exp(effect) of those genes
    depth: np.ndarray  # (n_batches,) float64 depth multiplier of each batch
    effects: np.ndarray  # (n_batches, n_genes) float64 natural-log effect, 0 where a batch shifts nothing


def simulate(  # noqa: PLR0913 (one keyword per knob of the simulated tissue, all with defaults)
    n_cells: int = 10_000,
    n_genes: int = 2_000,
    *,
    n_lineages: int = 3,
    types_per_lineage: int = 3,
    genes_per_type: int = 30,
    genes_per_lineage: int = 40,
    n_state_genes: int = 20,
    n_housekeeping: int = 100,
    n_noise: int = 200,
    type_lfc: float = 1.5,
    lineage_lfc: float = 0.95,
    state_lfc: float = 1.5,
    lfc_spread: float = 0.3,
    dispersion: float = 0.3,
    noise_dispersion: float = 4.0,
    depth_mean: float = 2_500.0,
    depth_sigma: float = 0.4,
    trajectory_fraction: float = 0.0,
    n_progenitor_genes: int = 20,
    n_batches: int = 1,
    batch_gene_fraction: float = 0.3,
    batch_lfc: float = 0.8,
    batch_depth_sigma: float = 0.2,
    n_proteins: int = 0,
    protein_split_types: int = 2,
    protein_lfc: float = 2.0,
    protein_background: float = 30.0,
    protein_dispersion: float = 0.2,
    chunk_size: int = 50_000,
    n_jobs: int = 1,
    random_state: int | None = 0,
    first_cell: int = 0,
) -> ad.AnnData:
    """Simulate single-cell counts with lineages, cell-type programs and continuous states.

    Counts are negative binomial (NB) with mean
    ``s_c · μ_g · exp(β_lineage + β_type + t_c · β_state)`` for cell ``c`` and gene ``g``,
    where ``s_c`` is the cell's log-normal size factor (mean 1), ``t_c ~ U(0, 1)`` its
    within-type pseudotime, and each ``β`` is non-zero only for the genes of the
    cell's lineage program, type program and type state program respectively. Every
    gene gets exactly one role (``var["role"]``):

    ``housekeeping``
        High mean in every cell, no structure.
    ``lineage``
        Up (log fold change ≈ ``lineage_lfc``) in every type of one lineage.
    ``type``
        Up (≈ ``type_lfc``) in one cell type only.
    ``state``
        Ramped up with the pseudotime ``t`` (≈ ``state_lfc`` at ``t = 1``) in one
        cell type only.
    ``noise``
        Strongly over-dispersed (``noise_dispersion``): high variance, no structure.
    ``background``
        Low mean, ordinary dispersion, no structure.
    ``progenitor``
        Only with ``trajectory_fraction > 0``: up (≈ ``type_lfc``) in progenitors,
        fading as they differentiate.

    With ``trajectory_fraction > 0`` that share of the cells lies on a branching
    differentiation trajectory instead of in a mature type. Each such cell has a
    fate (the first type of a lineage, ``L<i>_T0``; fates are equally likely)
    and a differentiation time ``τ ~ U(0, 1)``; its NB mean is
    ``s_c · μ_g · exp((1 - τ)·β_progenitor + τ·(β_lineage + β_type))`` for the
    fate's lineage and type programs. At ``τ = 0`` the cell is a progenitor,
    close to the average cell (no lineage or type program, only the small
    progenitor program); at ``τ = 1`` it equals its fate's type at state 0.
    Cells with ``τ < 1/3`` are labelled ``"progenitor"``, the others
    ``"L<i>_T0_transitional"``, so transitional cells keep a label of their own.

    With ``n_batches > 1`` every cell belongs to one of ``n_batches`` batches
    (donors, sites), drawn uniformly at random per cell (``obs["batch"]``). Each
    batch ``b`` shifts its own random set of ``round(batch_gene_fraction · n_genes)``
    genes, drawn from all genes whatever their role: gene ``g`` of that set gets
    a natural-log effect ``δ_bg`` with a random sign and a magnitude drawn
    uniformly from ``batch_lfc · [1 - lfc_spread, 1 + lfc_spread]`` (``δ_bg = 0``
    for the other genes). Each batch also has a log-normal depth multiplier
    ``d_b`` (mean 1, sigma ``batch_depth_sigma``). The NB mean of a cell of batch
    ``b`` is its mean above times ``d_b · exp(δ_bg)``; ``d_b`` is folded into the
    cell's ``size_factor``. Every batch is shifted, batch 0 included: the
    underlying biology is the unbatched simulation. Shifted genes of the
    unstructured roles (``housekeeping``, ``noise``, ``background``) are moved
    by the batch only (``var["batch_only"]``): an explanation free of the batch
    should not point at them.

    Program, state and background genes draw their base means from the same
    low log-normal distribution, so neither mean nor variance alone reveals them.
    Roles are assigned to randomly permuted gene positions.

    Parameters
    ----------
    n_cells
        Number of cells (1k–1M are practical; 1M × 2,000 takes about 100 s of CPU
        time and 8 GB peak memory).
    n_genes
        Number of genes. Must be at least the number of structured genes,
        ``n_lineages·genes_per_lineage + n_types·(genes_per_type + n_state_genes)
        + n_housekeeping + n_noise`` with ``n_types = n_lineages·types_per_lineage``;
        the remaining genes are background.
    n_lineages
        Number of lineages.
    types_per_lineage
        Cell types per lineage. Type proportions are drawn (unequal, each between
        about 1/3 and 3 times the others).
    genes_per_type
        Genes in each type program.
    genes_per_lineage
        Genes in each lineage program.
    n_state_genes
        Genes ramped by the pseudotime, per cell type.
    n_housekeeping
        Highly expressed genes without structure.
    n_noise
        Over-dispersed genes without structure.
    type_lfc, lineage_lfc, state_lfc
        Typical natural-log fold change of type, lineage and state genes (state:
        at ``t = 1``). Each gene draws its own value uniformly from
        ``lfc · [1 - lfc_spread, 1 + lfc_spread]``.
    lfc_spread
        Relative gene-to-gene spread of the fold changes, in ``[0, 1)``.
    dispersion
        NB dispersion ``φ`` (variance ``μ + φμ²``) of all genes but the noise genes;
        each gene's value is log-normally spread around it.
    noise_dispersion
        NB dispersion of the noise genes.
    depth_mean
        Expected number of counts of an average cell: the base means are rescaled
        so that the expected library size is ``depth_mean``.
    depth_sigma
        Log-normal sigma of the per-cell size factors (0 for constant depth).
    trajectory_fraction
        Share of the cells, in ``[0, 1)``, drawn on the branching trajectory
        (0: none, and the output is the same as without the trajectory options).
    n_progenitor_genes
        Genes of the progenitor program (used only with ``trajectory_fraction > 0``).
    n_batches
        Number of batches (1: no batches, and the output is the same as without
        the batch options: nothing is drawn or added).
    batch_gene_fraction
        Share of all genes, in ``[0, 1]``, that each batch shifts; each batch
        draws its own set, so a gene may be shifted by several batches.
    batch_lfc
        Typical magnitude of a batch's natural-log fold change on one of its
        genes; each (batch, gene) draws a sign ``±1`` and a magnitude uniformly
        from ``batch_lfc · [1 - lfc_spread, 1 + lfc_spread]``.
    batch_depth_sigma
        Log-normal sigma of the per-batch depth multipliers (0: every batch has
        the same depth).
    n_proteins
        Surface proteins measured with the RNA, as in CITE-seq (0: none, and
        the output is the same as without the protein options). Each lineage
        has 3 marker proteins (so the types of one lineage differ in RNA
        only), and ``protein_split_types`` types are each split into two
        subtypes with 3 markers each and identical RNA (``obs["subtype"]``);
        the other proteins are background. Needs at least ``3·n_lineages +
        6·protein_split_types`` proteins.
    protein_split_types
        Cell types split by protein alone: the first type (``L<i>_T0``) of
        each of the first ``protein_split_types`` lineages.
    protein_lfc
        Typical natural-log fold change of a marker protein (per protein,
        uniformly from ``protein_lfc · [1 - lfc_spread, 1 + lfc_spread]``).
    protein_background
        Typical background (ambient) count of a protein at size factor 1;
        per protein log-normal around it (sigma 0.5).
    protein_dispersion
        NB dispersion of the protein counts.
    chunk_size
        Cells assembled into CSR at a time; rounded up to a multiple of 1,024.
        Only dense blocks of 1,024 cells are ever allocated, so memory stays
        bounded by the (sparse) output. The result does not depend on it.
    n_jobs
        Threads generating blocks (``-1``: all cores). The result does not
        depend on it.
    random_state
        Seed. Global quantities (gene roles, means, effect sizes, type
        proportions) come from spawn key ``(0,)`` of
        ``numpy.random.SeedSequence(random_state)``; the cells of block ``i``
        (cells ``1024·i`` to ``1024·(i+1) - 1``) from spawn key ``(1, i)``, their
        trajectory draws from ``(2, i)``; the batch design (shifted genes,
        effects, depths) from ``(3,)`` and the batch of each cell of block ``i``
        from ``(4, i)``, so batches leave the gene roles and means unchanged. Hence the
        same seed gives identical data whatever ``chunk_size`` and ``n_jobs``, and
        ``simulate(n, ...)`` equals the first ``n`` cells of ``simulate(N, ...)``
        for ``n < N`` (all else equal). ``None`` draws a seed, recorded in
        ``uns["simulation"]["params"]["random_state"]``.
    first_cell
        Index of the first cell to draw, a multiple of 1,024: the result is
        cells ``first_cell`` to ``first_cell + n_cells - 1`` of the simulation
        (named ``cell_<index>``), so a large data set can be drawn and written
        in pieces (:func:`write_simulated`) and equals one call's output.

    Returns
    -------
    anndata.AnnData
        ``n_cells × n_genes`` with

        * ``layers["counts"]``: raw counts, CSR float32 holding integers;
        * ``X``: ``log1p`` of counts normalised to 10,000 per cell, CSR float32;
        * ``obs``: ``cell_type`` and ``lineage`` (categorical), ``state`` (the
          pseudotime ``t``; NaN for trajectory cells), ``size_factor``, ``depth``
          (expected library size, ``size_factor · depth_mean``), ``n_counts``
          (observed library size) and ``n_genes`` (detected genes); with a
          trajectory also ``trajectory_time`` (``τ``; NaN for other cells) and
          ``fate`` (categorical; NaN for other cells); with ``n_batches > 1``
          also ``batch`` (categorical, ``"B0"`` to ``"B<n_batches - 1>"``), and
          ``size_factor`` and ``depth`` include the batch's depth multiplier;
        * ``var``: ``role`` (categorical, see above), ``program`` (the lineage or
          cell type a program gene belongs to, ``""`` otherwise), ``lfc`` (its
          fold change, 0 otherwise), ``base_mean`` (NB mean at size factor 1 outside
          its program) and ``dispersion``; with ``n_batches > 1`` also
          ``batch_gene`` (bool: shifted by at least one batch) and
          ``batch_only`` (bool: a batch gene of role ``housekeeping``, ``noise``
          or ``background``, i.e. moved by the batch only);
        * ``uns["simulation"]``: ``truth`` (cell type → array of the gene names up
          in it: its type, lineage and state programs; for the trajectory labels,
          the progenitor program, plus the fate's lineage and type programs for
          transitional cells), ``programs`` (``type``, ``lineage`` and ``state``
          programs separately, and ``progenitor``), ``lineage_of`` (cell type →
          lineage) and ``params`` (every argument, plus the seed actually used;
          the batch arguments only with ``n_batches > 1``); with
          ``n_batches > 1`` also ``batch_effects`` (float64 array,
          ``n_batches × n_genes``: the natural-log effect ``δ_bg`` of each batch
          on each gene, 0 where it does not shift it) and ``batch_depth``
          (float64 array, ``n_batches``: each batch's depth multiplier ``d_b``).
          Everything is ``.h5ad``-writable.

        With ``n_proteins > 0`` the proteins follow the genes as features
        (``prot_<i>``): ``var["feature_types"]`` is ``"GEX"`` or ``"ADT"`` (as in
        CITE-seq files), ``var["protein_role"]`` ``"lineage"``, ``"subtype"``
        or ``"background"`` (``""`` for genes) and ``var["role"]``
        ``"protein"``; ``layers["counts"]`` holds both counts; ``X`` holds the
        genes as above (normalised over the genes only, so unchanged) and the
        proteins CLR-normalised across cells (muon's ``prot.pp.clr``; as it
        uses every cell, this part of ``X`` is not a prefix of a larger
        simulation's, the counts are); ``obs`` gains ``subtype``,
        ``protein_size_factor`` and ``n_protein_counts``, and
        ``uns["simulation"]["protein_truth"]`` maps each lineage and subtype to
        its marker proteins.

    See Also
    --------
    truth_matrix : The ground truth as a genes × cell types boolean table.

    Examples
    --------
    >>> from gbumap.datasets import simulate, truth_matrix
    >>> adata = simulate(2_000, 1_000, random_state=1)
    >>> adata
    AnnData object with n_obs × n_vars = 2000 × 1000
        obs: 'cell_type', 'lineage', 'state', 'size_factor', 'depth', 'n_counts', 'n_genes'
        var: 'role', 'program', 'lfc', 'base_mean', 'dispersion'
        uns: 'simulation'
        layers: 'counts'
    >>> truth = truth_matrix(adata)
    >>> truth.shape
    (1000, 9)
    >>> int(truth["L0_T0"].sum())  # 30 type + 40 lineage + 20 state genes
    90
    """
    args = _checked_args(
        n_cells=n_cells, n_genes=n_genes, n_lineages=n_lineages, types_per_lineage=types_per_lineage,
        genes_per_type=genes_per_type, genes_per_lineage=genes_per_lineage, n_state_genes=n_state_genes,
        n_housekeeping=n_housekeeping, n_noise=n_noise, chunk_size=chunk_size, type_lfc=type_lfc,
        lineage_lfc=lineage_lfc, state_lfc=state_lfc, lfc_spread=lfc_spread, dispersion=dispersion,
        noise_dispersion=noise_dispersion, depth_mean=depth_mean, depth_sigma=depth_sigma,
        trajectory_fraction=trajectory_fraction, n_progenitor_genes=n_progenitor_genes, n_batches=n_batches,
        batch_gene_fraction=batch_gene_fraction, batch_lfc=batch_lfc, batch_depth_sigma=batch_depth_sigma,
        n_jobs=n_jobs, random_state=random_state, first_cell=first_cell,
    )
    _check_proteins(n_proteins, protein_split_types, protein_lfc, protein_background, protein_dispersion, args)
    root = np.random.SeedSequence(args.random_state)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(root.entropy, spawn_key=(0,))))
    genes = _gene_design(args, rng)
    batches = _batch_design(args, root)
    design = _Design(
        type_means=genes.type_means.astype(np.float32),
        theta=(1.0 / genes.phi).astype(np.float32),
        state_cols=genes.state_cols,
        state_lfc=[genes.lfc[c].astype(np.float32) for c in genes.state_cols],
        type_cdf=np.cumsum(genes.proportions),
        depth_sigma=args.depth_sigma,
        trajectory=_trajectory_design(args, genes),
        batches=batches,
    )
    counts, X, cells = _draw_cells(design, args, root)
    gene_width = len(str(args.n_genes - 1))
    gene_names = np.array([f"gene_{i:0{gene_width}d}" for i in range(args.n_genes)])
    obs = _obs_table(args, genes, cells)
    var = _var_table(args, genes, gene_names, batches)
    uns = {"simulation": _simulation_record(args, genes, gene_names, batches)}
    adata = ad.AnnData(X=X, obs=obs, var=var, uns=uns, layers={"counts": counts})
    if n_proteins == 0:
        return adata
    return with_proteins(
        adata, n_proteins=n_proteins, protein_split_types=protein_split_types, protein_lfc=protein_lfc,
        protein_background=protein_background, protein_dispersion=protein_dispersion, lfc_spread=args.lfc_spread,
        depth_sigma=args.depth_sigma, lineages=list(args.lineages), seed=args.random_state,
        first_cell=args.first_cell,
    )


# ---------------------------------------------------------------------------
# the design: arguments, genes, trajectory and batches


@dataclass(frozen=True)
class _Args:
    """The checked arguments of :func:`simulate` (``random_state`` drawn when it was ``None``)."""

    n_cells: int
    n_genes: int
    n_lineages: int
    types_per_lineage: int
    genes_per_type: int
    genes_per_lineage: int
    n_state_genes: int
    n_housekeeping: int
    n_noise: int
    chunk_size: int
    type_lfc: float
    lineage_lfc: float
    state_lfc: float
    lfc_spread: float
    dispersion: float
    noise_dispersion: float
    depth_mean: float
    depth_sigma: float
    trajectory_fraction: float
    n_progenitor_genes: int
    n_batches: int
    batch_gene_fraction: float
    batch_lfc: float
    batch_depth_sigma: float
    n_jobs: int
    random_state: int
    first_cell: int

    @property
    def n_types(self) -> int:
        return self.n_lineages * self.types_per_lineage

    @property
    def with_trajectory(self) -> bool:
        return self.trajectory_fraction > 0

    @property
    def with_batches(self) -> bool:
        return self.n_batches > 1

    @property
    def lineages(self) -> list[str]:
        return [f"L{i}" for i in range(self.n_lineages)]

    @property
    def cell_types(self) -> list[str]:
        return [f"L{i}_T{j}" for i in range(self.n_lineages) for j in range(self.types_per_lineage)]

    @property
    def lineage_of_type(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_lineages), self.types_per_lineage)

    @property
    def fate_type(self) -> np.ndarray:
        """The mature type of each trajectory fate: the first type of each lineage."""
        return np.array([i * self.types_per_lineage for i in range(self.n_lineages)])


def _checked_args(**kw: Any) -> _Args:
    """Every argument of :func:`simulate` checked (type, range, the design fits in ``n_genes``)."""
    out = dict(
        n_cells=_check_int(kw["n_cells"], "n_cells", 1),
        n_genes=_check_int(kw["n_genes"], "n_genes", 1),
        n_lineages=_check_int(kw["n_lineages"], "n_lineages", 1),
        types_per_lineage=_check_int(kw["types_per_lineage"], "types_per_lineage", 1),
        genes_per_type=_check_int(kw["genes_per_type"], "genes_per_type", 0),
        genes_per_lineage=_check_int(kw["genes_per_lineage"], "genes_per_lineage", 0),
        n_state_genes=_check_int(kw["n_state_genes"], "n_state_genes", 0),
        n_housekeeping=_check_int(kw["n_housekeeping"], "n_housekeeping", 0),
        n_noise=_check_int(kw["n_noise"], "n_noise", 0),
        chunk_size=_check_int(kw["chunk_size"], "chunk_size", 1),
        type_lfc=_check_float(kw["type_lfc"], "type_lfc", 0.0),
        lineage_lfc=_check_float(kw["lineage_lfc"], "lineage_lfc", 0.0),
        state_lfc=_check_float(kw["state_lfc"], "state_lfc", 0.0),
        lfc_spread=_check_float(kw["lfc_spread"], "lfc_spread", 0.0),
    )
    if out["lfc_spread"] >= 1:
        raise ValueError(f"lfc_spread must be in [0, 1); got {out['lfc_spread']}.")
    out.update(
        dispersion=_check_float(kw["dispersion"], "dispersion", 0.0, strict=True),
        noise_dispersion=_check_float(kw["noise_dispersion"], "noise_dispersion", 0.0, strict=True),
        depth_mean=_check_float(kw["depth_mean"], "depth_mean", 0.0, strict=True),
        depth_sigma=_check_float(kw["depth_sigma"], "depth_sigma", 0.0),
        trajectory_fraction=_check_float(kw["trajectory_fraction"], "trajectory_fraction", 0.0),
    )
    if out["trajectory_fraction"] >= 1:
        raise ValueError(f"trajectory_fraction must be in [0, 1); got {out['trajectory_fraction']}.")
    out.update(
        n_progenitor_genes=_check_int(kw["n_progenitor_genes"], "n_progenitor_genes", 0),
        n_batches=_check_int(kw["n_batches"], "n_batches", 1),
        batch_gene_fraction=_check_float(kw["batch_gene_fraction"], "batch_gene_fraction", 0.0),
    )
    if out["batch_gene_fraction"] > 1:
        raise ValueError(f"batch_gene_fraction must be in [0, 1]; got {out['batch_gene_fraction']}.")
    out.update(
        batch_lfc=_check_float(kw["batch_lfc"], "batch_lfc", 0.0),
        batch_depth_sigma=_check_float(kw["batch_depth_sigma"], "batch_depth_sigma", 0.0),
        n_jobs=_check_n_jobs(kw["n_jobs"]),
    )
    random_state = kw["random_state"]
    if random_state is None:
        random_state = int(np.random.default_rng().integers(2**63 - 1))
    out["random_state"] = _check_int(random_state, "random_state", 0)
    out["first_cell"] = _check_int(kw["first_cell"], "first_cell", 0)
    if out["first_cell"] % _SEED_BLOCK:
        raise ValueError(f"first_cell must be a multiple of {_SEED_BLOCK}; got {out['first_cell']}.")
    args = _Args(**out)
    _check_design_fits(args)
    return args


def _check_design_fits(args: _Args) -> None:
    """Raise when ``n_genes`` is smaller than the number of structured genes the design needs."""
    n_progenitor = args.n_progenitor_genes if args.with_trajectory else 0
    n_structured = (
        args.n_lineages * args.genes_per_lineage
        + args.n_types * (args.genes_per_type + args.n_state_genes)
        + args.n_housekeeping
        + args.n_noise
        + n_progenitor
    )
    if n_structured > args.n_genes:
        progenitor = f" + {args.n_progenitor_genes} progenitor" if args.with_trajectory else ""
        raise ValueError(
            f"n_genes={args.n_genes} is too small: the design needs {n_structured} genes "
            f"({args.n_lineages} lineages × {args.genes_per_lineage} + {args.n_types} types × "
            f"({args.genes_per_type} type + {args.n_state_genes} state) + {args.n_housekeeping} housekeeping "
            f"+ {args.n_noise} noise{progenitor}). Increase n_genes or shrink the programs."
        )


@dataclass
class _Genes:
    """Every gene's role, program and fold change, the programs' gene sets, and the means at size factor 1."""

    role: np.ndarray  # (n_genes,) int8 index into ROLES
    program: np.ndarray  # (n_genes,) object: the lineage or type a program gene belongs to, "" otherwise
    lfc: np.ndarray  # (n_genes,) float64 natural-log fold change of a program gene, 0 otherwise
    hk_cols: np.ndarray
    noise_cols: np.ndarray
    lineage_cols: list[np.ndarray]  # per lineage
    type_cols: list[np.ndarray]  # per type
    state_cols: list[np.ndarray]  # per type
    progenitor_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    base: np.ndarray | None = None  # (n_genes,) NB mean outside any program, rescaled to depth_mean
    phi: np.ndarray | None = None  # (n_genes,) NB dispersion
    proportions: np.ndarray | None = None  # (n_types,) cell-type proportions
    log_effect: np.ndarray | None = None  # (n_types, n_genes) lineage + type program of each type
    type_means: np.ndarray | None = None  # (n_types, n_genes) mean at size factor 1 and t = 0
    scale: float = 1.0  # the factor that brought the expected library size to depth_mean


def _gene_design(args: _Args, rng: np.random.Generator) -> _Genes:
    """Gene roles on a random permutation of positions, base means, dispersions and per-type means.

    Every draw comes from ``rng`` (spawn key ``(0,)``), in a fixed order; the
    progenitor program is drawn after everything else, so that without a
    trajectory nothing changes.
    """
    order = rng.permutation(args.n_genes)
    cursor = 0

    def take(n: int) -> np.ndarray:
        nonlocal cursor
        cols = np.sort(order[cursor : cursor + n])
        cursor += n
        return cols

    genes = _gene_roles(args, rng, take)
    _base_means(args, rng, genes)
    if args.with_trajectory:
        genes.progenitor_cols = take(args.n_progenitor_genes)
        genes.role[genes.progenitor_cols] = ROLES.index("progenitor")
        genes.program[genes.progenitor_cols] = PROGENITOR
        genes.lfc[genes.progenitor_cols] = _draw_lfc(rng, args.type_lfc, args.lfc_spread, genes.progenitor_cols.size)
    _type_means(args, genes)
    return genes


def _draw_lfc(generator: np.random.Generator, center: float, spread: float, n: int) -> np.ndarray:
    """``n`` fold changes drawn uniformly from ``center · [1 - spread, 1 + spread]``."""
    return center * generator.uniform(1 - spread, 1 + spread, size=n)


def _gene_roles(args: _Args, rng: np.random.Generator, take) -> _Genes:
    """Housekeeping, noise, lineage, type and state genes, each set taken in turn from the permutation."""
    role = np.full(args.n_genes, ROLES.index("background"), dtype=np.int8)
    program = np.full(args.n_genes, "", dtype=object)
    lfc = np.zeros(args.n_genes)
    hk_cols = take(args.n_housekeeping)
    role[hk_cols] = ROLES.index("housekeeping")
    noise_cols = take(args.n_noise)
    role[noise_cols] = ROLES.index("noise")
    sets: dict[str, list[np.ndarray]] = {"lineage": [], "type": [], "state": []}
    for kind, names, size, center in (
        ("lineage", args.lineages, args.genes_per_lineage, args.lineage_lfc),
        ("type", args.cell_types, args.genes_per_type, args.type_lfc),
        ("state", args.cell_types, args.n_state_genes, args.state_lfc),
    ):
        for name in names:
            cols = take(size)
            role[cols], program[cols] = ROLES.index(kind), name
            lfc[cols] = _draw_lfc(rng, center, args.lfc_spread, cols.size)
            sets[kind].append(cols)
    return _Genes(role, program, lfc, hk_cols, noise_cols, sets["lineage"], sets["type"], sets["state"])


def _base_means(args: _Args, rng: np.random.Generator, genes: _Genes) -> None:
    """Base means and dispersions per gene (log-normal, by role) and the cell-type proportions."""
    base = rng.lognormal(np.log(_BG_MEDIAN), _BG_SIGMA, size=args.n_genes)
    base[genes.hk_cols] = rng.lognormal(np.log(_HK_MEDIAN), _HK_SIGMA, size=genes.hk_cols.size)
    base[genes.noise_cols] = rng.lognormal(np.log(_NOISE_MEDIAN), _NOISE_SIGMA, size=genes.noise_cols.size)
    phi = args.dispersion * rng.lognormal(0.0, _DISPERSION_SIGMA, size=args.n_genes)
    phi[genes.noise_cols] = args.noise_dispersion * rng.lognormal(0.0, _DISPERSION_SIGMA, size=genes.noise_cols.size)
    weights = rng.uniform(0.5, 1.5, size=args.n_types)
    genes.base, genes.phi, genes.proportions = base, phi, weights / weights.sum()


def _type_means(args: _Args, genes: _Genes) -> None:
    """Each type's means (its lineage and type programs), all rescaled so an average cell has ``depth_mean`` counts."""
    lfc, lineage_of_type = genes.lfc, args.lineage_of_type
    log_effect = np.zeros((args.n_types, args.n_genes))
    for k in range(args.n_types):
        log_effect[k, genes.lineage_cols[lineage_of_type[k]]] = lfc[genes.lineage_cols[lineage_of_type[k]]]
        log_effect[k, genes.type_cols[k]] = lfc[genes.type_cols[k]]
    type_means = genes.base[None, :] * np.exp(log_effect)
    # Expected library size at size factor 1, averaging the state ramp over t ~ U(0, 1).
    expected = type_means.sum(axis=1)
    for k in range(args.n_types):
        ramp = lfc[genes.state_cols[k]]
        mean_gain = np.where(ramp > 0, np.expm1(ramp) / np.where(ramp > 0, ramp, 1.0), 0.0)
        expected[k] += (type_means[k, genes.state_cols[k]] * mean_gain).sum()
    scale = args.depth_mean / float(genes.proportions @ expected)
    genes.base *= scale
    type_means *= scale
    genes.log_effect, genes.type_means, genes.scale = log_effect, type_means, scale


def _trajectory_design(args: _Args, genes: _Genes) -> _Trajectory | None:
    """The branching trajectory (``None`` without one): the progenitor program and one branch per lineage."""
    if not args.with_trajectory:
        return None
    progenitor_effect = np.zeros(args.n_genes)
    progenitor_effect[genes.progenitor_cols] = genes.lfc[genes.progenitor_cols]
    return _Trajectory(
        fraction=args.trajectory_fraction,
        log_base=np.log(genes.base),
        progenitor_effect=progenitor_effect,
        fate_effect=genes.log_effect[args.fate_type],
        fate_type=args.fate_type,
    )


def _batch_design(args: _Args, root: np.random.SeedSequence) -> _Batches | None:
    """Each batch's shifted genes, their effects and its depth, from a stream of their own (spawn key ``(3,)``).

    ``None`` without batches. Nothing else depends on these draws.
    """
    if not args.with_batches:
        return None
    batch_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(root.entropy, spawn_key=(3,))))
    n_shifted = int(round(args.batch_gene_fraction * args.n_genes))
    effects = np.zeros((args.n_batches, args.n_genes))
    depth = np.ones(args.n_batches)
    batch_cols = []
    for b in range(args.n_batches):  # batch by batch: batch b's design does not depend on n_batches
        cols = np.sort(batch_rng.choice(args.n_genes, size=n_shifted, replace=False))
        sign = 2.0 * batch_rng.integers(2, size=n_shifted) - 1.0
        effects[b, cols] = sign * _draw_lfc(batch_rng, args.batch_lfc, args.lfc_spread, n_shifted)
        z = batch_rng.standard_normal()
        depth[b] = np.exp(args.batch_depth_sigma * z - 0.5 * args.batch_depth_sigma**2)
        batch_cols.append(cols)
    return _Batches(
        n_batches=args.n_batches,
        cols=batch_cols,
        factor=[np.exp(effects[b, c]).astype(np.float32) for b, c in enumerate(batch_cols)],
        depth=depth,
        effects=effects,
    )


# ---------------------------------------------------------------------------
# the cells, block by block, and the AnnData around them

# Where each block's arrays go: (list in counts_parts / cell_parts, attribute of the block).
_COUNT_FIELDS = (("data", "data"), ("indices", "indices"), ("x", "x"), ("nnz", "row_nnz"))
_CELL_FIELDS = (
    ("type", "cell_type"),
    ("t", "t"),
    ("size", "size_factor"),
    ("total", "total"),
    ("ngenes", "row_nnz"),
    ("tau", "tau"),
    ("fate", "fate"),
    ("batch", "batch"),
)


def _draw_cells(
    design: _Design, args: _Args, root: np.random.SeedSequence
) -> tuple[sp.csr_matrix, sp.csr_matrix, dict[str, np.ndarray]]:
    """Counts and log-normalised CSR matrices, and the per-cell draws, block by block.

    Each block of ``_SEED_BLOCK`` cells has its own streams, so the result
    does not depend on ``chunk_size`` or ``n_jobs``.
    """
    n_cells, first_cell = args.n_cells, args.first_cell
    n_blocks = -(-n_cells // _SEED_BLOCK)
    blocks_per_chunk = max(1, -(-args.chunk_size // _SEED_BLOCK))

    def run_block(b: int) -> _Block:
        # Always a full block, cut afterwards: the first cells then do not depend on n_cells.
        ss = np.random.SeedSequence(root.entropy, spawn_key=(1, b + first_cell // _SEED_BLOCK))
        traj_ss = np.random.SeedSequence(root.entropy, spawn_key=(2, b + first_cell // _SEED_BLOCK))
        batch_gen = None
        if args.with_batches:
            batch_ss = np.random.SeedSequence(root.entropy, spawn_key=(4, b + first_cell // _SEED_BLOCK))
            batch_gen = np.random.Generator(np.random.PCG64(batch_ss))
        block = _simulate_block(
            design,
            _SEED_BLOCK,
            np.random.Generator(np.random.PCG64(ss)),
            np.random.Generator(np.random.PCG64(traj_ss)),
            batch_gen,
        )
        return block.head(min(_SEED_BLOCK, n_cells - b * _SEED_BLOCK))

    counts_parts: dict[str, list[np.ndarray]] = {part: [] for part, _ in _COUNT_FIELDS}
    cell_parts: dict[str, list[np.ndarray]] = {part: [] for part, _ in _CELL_FIELDS}
    executor = ThreadPoolExecutor(args.n_jobs) if args.n_jobs > 1 else None
    try:
        for first in range(0, n_blocks, blocks_per_chunk):
            ids = range(first, min(n_blocks, first + blocks_per_chunk))
            blocks = list(executor.map(run_block, ids)) if executor else [run_block(b) for b in ids]
            for blk in blocks:
                for parts, fields in ((counts_parts, _COUNT_FIELDS), (cell_parts, _CELL_FIELDS)):
                    for part, field in fields:
                        parts[part].append(getattr(blk, field))
            del blocks
            # Merge the chunk's blocks so the final concatenation handles few arrays.
            for key in counts_parts:
                tail = counts_parts[key][-len(ids) :]
                del counts_parts[key][-len(ids) :]
                counts_parts[key].append(np.concatenate(tail))
    finally:
        if executor is not None:
            executor.shutdown()

    row_nnz = np.concatenate(counts_parts.pop("nnz"))
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    indices = _concat_free(counts_parts["indices"])
    shape = (n_cells, args.n_genes)
    counts = sp.csr_matrix((_concat_free(counts_parts["data"]), indices, indptr), shape=shape)
    X = sp.csr_matrix((_concat_free(counts_parts["x"]), indices.copy(), indptr.copy()), shape=shape)
    counts.has_sorted_indices = True
    X.has_sorted_indices = True
    return counts, X, {key: np.concatenate(parts) for key, parts in cell_parts.items()}


def _fates(args: _Args) -> list[str]:
    """The trajectory's fates: the mature type of each branch."""
    return [args.cell_types[k] for k in args.fate_type]


def _obs_table(args: _Args, genes: _Genes, cells: dict[str, np.ndarray]) -> pd.DataFrame:
    """``obs``: labels, lineage, state, size factor, depth and library sizes (trajectory and batch columns too)."""
    lineage_of_type, fate_type = args.lineage_of_type, args.fate_type
    fates = _fates(args)
    labels = args.cell_types + ([PROGENITOR] + [f"{f}_transitional" for f in fates] if args.with_trajectory else [])
    # lineage of each label: the trajectory labels take their fate's lineage
    cell_type_codes, fate_codes, size_factor = cells["type"], cells["fate"], cells["size"]
    label_lineage = np.concatenate([lineage_of_type, np.zeros(len(labels) - args.n_types, dtype=np.int64)])
    lineage_codes = label_lineage[cell_type_codes]
    on_trajectory = fate_codes >= 0
    lineage_codes[on_trajectory] = lineage_of_type[fate_type[fate_codes[on_trajectory]]]
    columns = {
        "cell_type": pd.Categorical.from_codes(cell_type_codes, categories=labels),
        "lineage": pd.Categorical.from_codes(lineage_codes, categories=args.lineages),
        "state": cells["t"],
        "size_factor": size_factor,
        "depth": (size_factor * np.float32(args.depth_mean)).astype(np.float32),
        "n_counts": cells["total"],
        "n_genes": cells["ngenes"].astype(np.int32),
    }
    if args.with_trajectory:
        columns["trajectory_time"] = cells["tau"]
        columns["fate"] = pd.Categorical.from_codes(fate_codes, categories=fates)
    if args.with_batches:
        batch_names = [f"B{b}" for b in range(args.n_batches)]
        columns["batch"] = pd.Categorical.from_codes(cells["batch"], categories=batch_names)
    first = args.first_cell
    return pd.DataFrame(columns, index=pd.Index([f"cell_{i}" for i in range(first, first + args.n_cells)]))


def _var_table(args: _Args, genes: _Genes, gene_names: np.ndarray, batches: _Batches | None) -> pd.DataFrame:
    """``var``: each gene's role, program, fold change, base mean and dispersion (and batch flags)."""
    program_names = [""] + args.lineages + args.cell_types + ([PROGENITOR] if args.with_trajectory else [])
    var = pd.DataFrame(
        {
            "role": pd.Categorical.from_codes(genes.role, categories=list(ROLES)),
            "program": pd.Categorical(genes.program.astype(str), categories=program_names),
            "lfc": genes.lfc.astype(np.float32),
            "base_mean": genes.base.astype(np.float32),
            "dispersion": genes.phi.astype(np.float32),
        },
        index=pd.Index(gene_names),
    )
    if batches is not None:
        batch_gene = (batches.effects != 0).any(axis=0)
        unstructured = np.isin(genes.role, [ROLES.index(r) for r in ("housekeeping", "noise", "background")])
        var["batch_gene"] = batch_gene
        var["batch_only"] = batch_gene & unstructured
    return var


def _simulation_record(args: _Args, genes: _Genes, gene_names: np.ndarray, batches: _Batches | None) -> dict:
    """``uns["simulation"]``: the truth per label, the programs, the lineages, the arguments and the batch design."""
    cell_types, lineages, lineage_of_type = args.cell_types, args.lineages, args.lineage_of_type
    fates, fate_type = _fates(args), args.fate_type
    type_cols, lineage_cols, state_cols = genes.type_cols, genes.lineage_cols, genes.state_cols

    def names(cols: np.ndarray) -> np.ndarray:
        return gene_names[np.sort(cols)].astype(str)

    truth = {
        ct: names(np.concatenate([type_cols[k], lineage_cols[lineage_of_type[k]], state_cols[k]]))
        for k, ct in enumerate(cell_types)
    }
    lineage_of = {ct: lineages[lineage_of_type[k]] for k, ct in enumerate(cell_types)}
    if args.with_trajectory:
        truth[PROGENITOR] = names(genes.progenitor_cols)
        for k, fate in zip(fate_type, fates):
            fate_genes = [genes.progenitor_cols, type_cols[k], lineage_cols[lineage_of_type[k]]]
            truth[f"{fate}_transitional"] = names(np.concatenate(fate_genes))
        lineage_of.update({f"{fates[i]}_transitional": lineages[lineage_of_type[k]] for i, k in enumerate(fate_type)})
    record = {
        "truth": truth,
        "programs": {
            "type": {ct: names(type_cols[k]) for k, ct in enumerate(cell_types)},
            "lineage": {lin: names(lineage_cols[i]) for i, lin in enumerate(lineages)},
            "state": {ct: names(state_cols[k]) for k, ct in enumerate(cell_types)},
            **({"progenitor": names(genes.progenitor_cols)} if args.with_trajectory else {}),
        },
        "lineage_of": lineage_of,
        "params": _recorded_params(args, genes.scale),
    }
    if batches is not None:
        record["batch_effects"] = batches.effects
        record["batch_depth"] = batches.depth
    return record


def _recorded_params(args: _Args, scale: float) -> dict[str, Any]:
    """Every argument (the batch ones only with batches), the seed used and the constants of the recipe."""
    names = [
        "n_cells", "first_cell", "n_genes", "n_lineages", "types_per_lineage", "genes_per_type", "genes_per_lineage",
        "n_state_genes", "n_housekeeping", "n_noise", "type_lfc", "lineage_lfc", "state_lfc", "lfc_spread",
        "dispersion", "noise_dispersion", "depth_mean", "depth_sigma", "trajectory_fraction", "n_progenitor_genes",
    ]
    if args.with_batches:
        names += ["n_batches", "batch_gene_fraction", "batch_lfc", "batch_depth_sigma"]
    params: dict[str, Any] = {name: getattr(args, name) for name in names}
    params.update(random_state=args.random_state, seed_block=_SEED_BLOCK, target_sum=_TARGET_SUM,
                  mean_scale=float(scale))
    return params


# ---------------------------------------------------------------------------
# the ground truth as a table


def truth_matrix(adata: ad.AnnData) -> pd.DataFrame:
    """The simulated ground truth as a genes × cell types boolean table.

    Parameters
    ----------
    adata
        Output of :func:`simulate` (possibly subset to fewer genes or cells, or
        read back from ``.h5ad``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``adata.var_names``, one column per cell type (in the order of
        the ``cell_type`` categories when present), ``True`` where the gene is up
        in that type: its type program, its lineage's program and its state genes.
        Truth genes missing from ``adata`` are ignored.

    Examples
    --------
    >>> from gbumap.datasets import simulate, truth_matrix
    >>> adata = simulate(1_000, 1_000, random_state=0)
    >>> truth = truth_matrix(adata)
    >>> truth.sum().tolist()
    [90, 90, 90, 90, 90, 90, 90, 90, 90]
    """
    try:
        truth = adata.uns["simulation"]["truth"]
    except (KeyError, TypeError):
        raise ValueError(
            "adata.uns['simulation']['truth'] is missing; truth_matrix needs the output of "
            "gbumap.datasets.simulate."
        ) from None
    columns = list(truth)
    if "cell_type" in adata.obs and isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype):
        categories = [str(c) for c in adata.obs["cell_type"].cat.categories]
        if set(categories) == set(columns):
            columns = categories
    var_names = pd.Index(adata.var_names)
    table = pd.DataFrame(False, index=var_names.copy(), columns=pd.Index(columns, name="cell_type"))
    for ct in columns:
        table[ct] = var_names.isin(np.asarray(truth[ct]).astype(str))
    table.index.name = None
    return table


# ---------------------------------------------------------------------------
# block generation


@dataclass
class _Block:
    data: np.ndarray  # float32 counts of the nonzero entries, row-major
    indices: np.ndarray  # int32 gene index of each nonzero entry
    x: np.ndarray  # float32 log-normalised value of each nonzero entry
    row_nnz: np.ndarray  # int64 nonzeros per cell
    cell_type: np.ndarray  # int codes
    t: np.ndarray  # float32 pseudotime
    size_factor: np.ndarray  # float32
    total: np.ndarray  # float32 observed library size
    tau: np.ndarray  # float32 differentiation time (NaN off the trajectory)
    fate: np.ndarray  # int16 fate index (-1 off the trajectory)
    batch: np.ndarray  # int16 batch index (0 without batches)

    def head(self, n: int) -> _Block:
        """The first ``n`` cells."""
        if n >= self.row_nnz.size:
            return self
        nnz = int(self.row_nnz[:n].sum())
        return _Block(
            data=self.data[:nnz].copy(),
            indices=self.indices[:nnz].copy(),
            x=self.x[:nnz].copy(),
            row_nnz=self.row_nnz[:n],
            cell_type=self.cell_type[:n],
            t=self.t[:n],
            size_factor=self.size_factor[:n],
            total=self.total[:n],
            tau=self.tau[:n],
            fate=self.fate[:n],
            batch=self.batch[:n],
        )


def _simulate_block(
    design: _Design,
    n: int,
    rng: np.random.Generator,
    trajectory_rng: np.random.Generator,
    batch_rng: np.random.Generator | None = None,
) -> _Block:
    """Generate ``n`` cells densely and return their sparse rows.

    ``trajectory_rng`` draws which cells lie on the trajectory, their fates and
    times; it is not used without a trajectory, so ``rng`` alone decides the rest.
    ``batch_rng`` draws each cell's batch; it is needed (and used) only with
    batches, and then changes nothing ``rng`` draws.
    """
    # Per-cell draws first, in a fixed order, then the count matrix.
    cell_type = np.searchsorted(design.type_cdf, rng.random(n), side="right")
    cell_type = np.minimum(cell_type, design.type_cdf.size - 1).astype(np.int16)
    t = rng.random(n)
    sigma = design.depth_sigma
    size_factor = np.exp(sigma * rng.standard_normal(n) - 0.5 * sigma * sigma)
    batches = design.batches
    batch = np.zeros(n, dtype=np.int16)
    if batches is not None:
        batch = batch_rng.integers(batches.n_batches, size=n).astype(np.int16)
        size_factor = size_factor * batches.depth[batch]

    mu = design.type_means[cell_type]
    mu *= size_factor.astype(np.float32)[:, None]
    for k in np.unique(cell_type):
        cols = design.state_cols[k]
        if cols.size == 0:
            continue
        rows = np.flatnonzero(cell_type == k)
        ramp = np.exp(np.multiply.outer(t[rows], design.state_lfc[k])).astype(np.float32)
        mu[np.ix_(rows, cols)] *= ramp

    tau = np.full(n, np.nan, dtype=np.float32)
    fate = np.full(n, -1, dtype=np.int16)
    state = t.astype(np.float32)
    traj = design.trajectory
    if traj is not None:
        on = np.flatnonzero(trajectory_rng.random(n) < traj.fraction)
        time = trajectory_rng.random(on.size)
        fate_of = trajectory_rng.integers(traj.fate_type.size, size=on.size)
        log_mu = (
            traj.log_base[None, :]
            + np.multiply.outer(1.0 - time, traj.progenitor_effect)
            + time[:, None] * traj.fate_effect[fate_of]
        )
        mu[on] = (np.exp(log_mu) * size_factor[on, None]).astype(np.float32)
        n_types = design.type_cdf.size
        cell_type[on] = np.where(time < _COMMIT_TIME, n_types, n_types + 1 + fate_of)
        tau[on] = time
        fate[on] = fate_of
        state[on] = np.nan
    if batches is not None:
        for b in np.unique(batch):
            cols = batches.cols[b]
            if cols.size:
                rows = np.flatnonzero(batch == b)
                mu[np.ix_(rows, cols)] *= batches.factor[b]

    row_nnz, indices, data = _sample_nb(mu, design.theta, rng)
    rows = np.repeat(np.arange(n), row_nnz)
    total = np.bincount(rows, weights=data, minlength=n)
    scale = (_TARGET_SUM / np.where(total > 0, total, 1.0)).astype(np.float32)
    x = data * scale[rows]
    x += 1.0
    np.log(x, out=x)  # log1p: the argument is ≥ 1 + 1e4/total, so no precision is lost
    return _Block(
        data=data,
        indices=indices,
        x=x,
        row_nnz=row_nnz,
        cell_type=cell_type,
        t=state,
        size_factor=size_factor.astype(np.float32),
        total=total.astype(np.float32),
        tau=tau,
        fate=fate,
        batch=batch,
    )


def _sample_nb(
    mu: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Negative-binomial counts with means ``mu`` (cells × genes) and sizes ``theta`` (genes).

    Returns the nonzero entries in CSR order: counts per row (int64), column
    indices (int32) and values (float32).

    Inverse-CDF sampling: with ``u ~ U(0, 1]`` the count is the smallest ``k``
    with ``F(k) ≥ u``. It is zero exactly when ``-log u ≥ -log F(0) = θ log(1 + μ/θ)``,
    which settles the zeros that dominate the matrix with two logs per entry;
    the CDF is then walked only for the nonzero entries. Entries with a large
    mean are drawn as Gamma-Poisson mixtures instead, where walking would be slow.
    """
    n_rows, n_cols = mu.shape
    u = rng.random(size=mu.shape, dtype=np.float32)
    np.subtract(1.0, u, out=u)  # (0, 1]: log u is finite
    high = mu > _MU_HIGH
    # -log F(0) = θ·log(1 + μ/θ), in place in float32.
    neg_log_p0 = mu * (1.0 / theta)
    neg_log_p0 += 1.0
    np.log(neg_log_p0, out=neg_log_p0)
    neg_log_p0 *= theta
    log_u = np.log(u)
    candidate = np.negative(log_u, out=log_u) < neg_log_p0
    del log_u
    candidate |= high
    pos = np.flatnonzero(candidate)
    row_nnz = np.count_nonzero(candidate, axis=1)
    del candidate
    cols = pos - np.repeat(np.arange(n_rows) * n_cols, row_nnz)
    mu_pos = mu.ravel()[pos].astype(np.float64)
    theta_pos = theta[cols].astype(np.float64)
    values = np.empty(pos.size, dtype=np.float32)

    is_high = high.ravel()[pos]
    low = np.flatnonzero(~is_high)
    if low.size:
        values[low] = _walk_cdf(
            u=u.ravel()[pos[low]].astype(np.float64),
            p0=np.exp(-neg_log_p0.ravel()[pos[low]].astype(np.float64)),
            mu=mu_pos[low],
            theta=theta_pos[low],
        )
    hi = np.flatnonzero(is_high)
    if hi.size:
        th = theta_pos[hi]
        values[hi] = rng.poisson(rng.standard_gamma(th) * (mu_pos[hi] / th))
        zero = hi[values[hi] == 0]
        if zero.size:  # large means are rarely zero; drop those that are
            keep = np.ones(pos.size, dtype=bool)
            keep[zero] = False
            row_nnz = row_nnz - np.bincount(pos[zero] // n_cols, minlength=n_rows)
            cols, values = cols[keep], values[keep]
    return row_nnz.astype(np.int64), cols.astype(np.int32), values


def _walk_cdf(u: np.ndarray, p0: np.ndarray, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Smallest ``k ≥ 1`` with NB CDF ``F(k) ≥ u``, for ``u > F(0) = p0``; vectorised."""
    out = np.ones(u.size, dtype=np.float32)
    ratio = mu / (mu + theta)
    # P(1) = P(0)·θ·ratio; ``rest`` = u - F(k) is what the CDF still has to cover.
    pk = p0 * theta * ratio
    rest = u - p0 - pk
    idx = np.flatnonzero(rest > 0)
    pk, rest, ratio, theta, mu = pk[idx], rest[idx], ratio[idx], theta[idx], mu[idx]
    k = 1
    while idx.size:
        k += 1
        pk *= (theta + (k - 1)) * (ratio / k)
        rest -= pk
        out[idx] += 1.0
        # Past the mode, stop once the remaining tail is negligible: rounding in
        # F(0) or F(k) could otherwise keep ``rest`` positive for ever.
        keep = (rest > 0) & ((pk > 1e-13) | (k <= mu))
        if not keep.all():
            idx, pk, rest, ratio, theta, mu = (a[keep] for a in (idx, pk, rest, ratio, theta, mu))
    return out


def _concat_free(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate and empty ``parts`` (so the pieces can be freed)."""
    out = np.concatenate(parts) if len(parts) != 1 else parts[0]
    parts.clear()
    return out


# ---------------------------------------------------------------------------
# argument checks


def _check_proteins(n_proteins, split, lfc, background, dispersion, args: _Args) -> None:
    n_proteins = _check_int(n_proteins, "n_proteins", 0)
    if n_proteins == 0:
        return
    split = _check_int(split, "protein_split_types", 0)
    if split > args.n_lineages:
        raise ValueError(f"protein_split_types={split} exceeds the {args.n_lineages} lineages (one split type each).")
    _check_float(lfc, "protein_lfc", 0.0, strict=True)
    _check_float(background, "protein_background", 0.0, strict=True)
    _check_float(dispersion, "protein_dispersion", 0.0, strict=True)
    need = min_proteins(args.n_lineages, split)
    if n_proteins < need:
        raise ValueError(
            f"n_proteins={n_proteins} is too small: the design needs {need} proteins (3 per lineage × "
            f"{args.n_lineages} + 3 per subtype × 2 × {split} split types). Increase n_proteins or lower "
            "protein_split_types."
        )


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}; got {value}.")
    return int(value)


def _check_float(value: Any, name: str, minimum: float, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number; got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = ">" if strict else "≥"
        raise ValueError(f"{name} must be finite and {bound} {minimum}; got {value}.")
    return value


def _check_n_jobs(n_jobs: Any) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1 (all cores); got {n_jobs!r}.")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
