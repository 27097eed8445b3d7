"""The IsoFLOPs grid: which (model size, compute budget) cells to train, and ``ehrscale plan``.

For every budget ``C`` and every size in the ladder, a cell trains ``D = C / flops_per_token``
real target tokens (``ehrscale.model.config.flops_per_token``: ``6 N_total`` plus the causal
attention term). A cell is dropped, with the reason, when its tokens per (total) parameter
``D / N`` falls outside ``[min_tokens_per_param, max_tokens_per_param]`` (too far from any
plausible optimum to inform the fit) or when it would need more than ``max_epochs`` passes
over its unique data (a safety cap: :class:`GridSettings`).

Cell ids look like ``C3e11_d32L2``: budget first so ids sort by budget, no ``+`` or
spaces, safe as a Snakemake wildcard and a directory name (a decimal point in the budget
becomes ``p``: ``C1p5e12_d32L2``). A cell on a unique-data subset adds its fraction:
``C3e11_d32L2_u0p25`` trains on a quarter of the train patients.

**The unique-data axis** (``grid.data_fractions``, default ``[1.0]``). Each fraction is a nested
subset of the train patients (:func:`ehrscale.tokens.store.data_subset`), so the same (N, D) can
run at several unique-token counts U and repeat its data R = D / U times; a size on a subset is
its own WSD chain (:attr:`Cell.chain`). ``max_epochs`` is a hard safety cap, not the design: the
data-constrained law (:mod:`ehrscale.fit.repetition`) measures what repetition costs.

**Sizes centred on the optimum** (``grid.centre``). A fixed ladder filtered by tokens per
parameter leaves the sampled window drifting across budgets, a known source of Approach 2
bias. With ``centre`` set, each budget gets ``per_budget`` sizes centred (in ln N) on a
predicted ``N_opt(C) = params x (C / budget) ** exponent`` (a prior exponent and one anchor,
e.g. from a pilot fit). Sizes come from one geometric ladder of target sizes
``params x spacing ** k`` shared by every budget, so a size recurs across budgets (which is
what lets a WSD stable phase serve several cells), and ``size_for_params`` turns each
target into a depth, width and head count. ``model_sizes`` is then not used.

A cell is also dropped when its size's rows per step (``ehrscale.plan.rules.batch_size_for``,
fixed per size) give it fewer than ``train.min_steps`` optimizer steps.

Config sections read by ``ehrscale plan --config`` (YAML):

* ``model_sizes``: the ladder ``{name: {n_layer, d_model, n_head}}``, or the string
  ``"default"`` / ``"debug"`` for ``DEFAULT_SIZES`` / ``DEBUG_SIZES``;
* ``grid``: ``GridSettings``; ``model``: ``ModelSettings`` (context length etc.);
* ``train``: ``TrainSettings`` (batch rule, step minimum, schedule, LR columns).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.fit.law import effective_data
from ehrscale.model.config import DEBUG_SIZES, DEFAULT_SIZES, GPTConfig, ModelSettings, flops_per_token, param_counts
from ehrscale.plan.rules import TrainSettings, batch_size_for, branch_point
from ehrscale.tokens.store import TokenSplit, data_subset, read_stats, subset_targets, target_tokens_from_stats

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")


@dataclasses.dataclass
class GridSettings:
    """The ``grid`` config section."""

    sizes: list[str] = dataclasses.field(default_factory=list)  # empty: every size in the ladder
    budgets: list[float] = dataclasses.field(default_factory=list)  # FLOPs, e.g. [3e11, 1e12, 3e12]
    min_tokens_per_param: float = 1.0
    max_tokens_per_param: float = 1000.0
    # A hard safety cap, not the design: cells may repeat data (the data-constrained law measures what that
    # costs). Past ~64 epochs a repeated token is worth < 2 % of a fresh one at Muennighoff et al.'s R* = 15.
    max_epochs: float = 64.0
    centre: dict | None = None  # {params, budget, exponent, per_budget, spacing, aspect, r_star}: see CentreSettings
    # Nested subsets of the train patients (keyed hash, ehrscale.tokens.store.data_subset): the unique-data
    # axis. The same (N, D) at several U repeats the data R = D / U times; 1 is the whole split.
    data_fractions: list[float] = dataclasses.field(default_factory=lambda: [1.0])


@dataclasses.dataclass
class CentreSettings:
    """``grid.centre``: sizes centred on a predicted N_opt(C) = params * (C / budget) ** exponent."""

    params: float  # predicted compute-optimal total parameters at `budget`
    budget: float
    exponent: float = 0.5  # prior a (Chinchilla 0.5; the paper 0.58)
    per_budget: int = 6
    spacing: float = 1.5  # ratio of neighbouring target sizes
    aspect: float = 32.0  # d_model per layer of generated sizes
    head_dim: int = 16
    # Data-constrained centring: where a budget's optimum would repeat its unique tokens, the centre moves
    # to the optimum of the prior law under repetition (Muennighoff et al. 2023's R* = 15 for data).
    r_star: float = 15.0

    def __post_init__(self) -> None:
        if not (self.params > 0 and self.budget > 0 and self.spacing > 1 and self.per_budget >= 1 and self.aspect > 0
                and self.r_star > 0):
            raise EhrscaleError("grid.centre needs params > 0, budget > 0, spacing > 1, per_budget >= 1, aspect > 0, r_star > 0")

    def optimum(self, budget: float, unique_tokens: int | None = None) -> float:
        """The prior's compute-optimal N at ``budget``: N_opt(C) = params (C / budget)^exponent, or, when that
        would repeat ``unique_tokens``, the minimum of the prior law under repetition (:func:`prior_repeated_optimum`)."""
        n_opt = self.params * (budget / self.budget) ** self.exponent
        if unique_tokens is None or budget / (6 * n_opt) <= unique_tokens:
            return n_opt
        return prior_repeated_optimum(n_opt, budget, self.exponent, unique_tokens, self.r_star)


PRIOR_EXPONENT_SUM = 0.7  # alpha + beta of the planning prior (Chinchilla 0.62; Besiroglu et al. 0.72)


def prior_repeated_optimum(n_opt: float, budget: float, exponent: float, unique_tokens: float, r_star: float) -> float:
    """The N that minimises the planning prior A/N^alpha + B/D'^beta at C = 6ND under repetition, where
    alpha + beta = PRIOR_EXPONENT_SUM, beta / (alpha + beta) = ``exponent`` and A/B put the unconstrained
    optimum at ``n_opt``. Repetition moves compute from tokens to parameters, so it is >= n_opt."""
    beta = exponent * PRIOR_EXPONENT_SUM
    alpha = PRIOR_EXPONENT_SUM - beta
    g = n_opt / (budget / 6) ** exponent  # N_opt = G (C/6)^a with G = (alpha A / (beta B))^(1 / (alpha + beta))
    a_over_b = beta * g ** (alpha + beta) / alpha
    log_n = np.log(n_opt) + np.linspace(0.0, math.log(1e4), 4001)
    n = np.exp(log_n)
    loss = a_over_b * n**-alpha + effective_data(budget / (6 * n), unique_tokens, r_star) ** -beta
    return float(n[int(np.argmin(loss))])


def _widths():
    d = 4
    while d <= 8192:
        yield d
        d += 2 if d < 32 else 4 if d < 64 else 8 if d < 256 else 16 if d < 1024 else 64


def size_for_params(target: float, vocab_size: int, model: ModelSettings | None = None,
                    aspect: float = 32.0, head_dim: int = 16) -> tuple[str, dict[str, int]]:
    """The generated size closest (in ln N, total parameters) to ``target``: ``(name, definition)``.

    Depth grows with width (``n_layer`` is ``d_model / aspect`` rounded down or up, at least 2,
    whichever lands nearer); heads are about
    ``head_dim`` wide with an even head dimension (rotary). Names are ``d<width>L<depth>``.
    """
    model = model or ModelSettings()
    best: tuple[float, str, dict] | None = None
    for d in _widths():
        # both depths around d / aspect: rounding alone leaves 40 % gaps where the depth steps
        depths = sorted({max(2, math.floor(d / aspect)), max(2, math.ceil(d / aspect))})
        n_head = max(1, d // head_dim)
        while d % n_head or (d // n_head) % 2:
            n_head -= 1
        n_min = math.inf
        for n_layer in depths:
            size = {"n_layer": n_layer, "d_model": d, "n_head": n_head}
            n = param_counts(GPTConfig.from_size(size, vocab_size, model))["total"]
            n_min = min(n_min, n)
            err = abs(math.log(n / target)) + 1e-6 * abs(math.log(d / n_layer / aspect))  # ties: nearer the aspect
            if best is None or err < best[0]:
                best = (err, f"d{d}L{n_layer}", size)
        if n_min > target and best[0] < abs(math.log(n_min / target)):
            break
    return best[1], best[2]


def centred_sizes(centre: CentreSettings, budget: float, vocab_size: int, model: ModelSettings,
                  unique_tokens: int | None = None) -> dict[str, dict]:
    """``per_budget`` distinct generated sizes centred in ln N on the predicted N_opt(budget): the prior's,
    or with ``unique_tokens`` the data-constrained one (:meth:`CentreSettings.optimum`)."""
    n_opt = centre.optimum(budget, unique_tokens)
    if n_opt == centre.params * (budget / centre.budget) ** centre.exponent:  # no repetition: the ladder as it was
        k_opt = centre.exponent * math.log(budget / centre.budget) / math.log(centre.spacing)
    else:
        k_opt = math.log(n_opt / centre.params) / math.log(centre.spacing)
    lo = round(k_opt - (centre.per_budget - 1) / 2)
    hi = lo + centre.per_budget - 1
    chosen: dict[str, dict] = {}

    def add(k: int) -> None:
        name, size = size_for_params(centre.params * centre.spacing ** k, vocab_size, model, centre.aspect, centre.head_dim)
        chosen.setdefault(name, size)

    for k in range(lo, hi + 1):
        add(k)
    while len(chosen) < centre.per_budget and hi - lo < 4 * centre.per_budget:  # coarse widths collide: widen
        hi += 1
        add(hi)
        if len(chosen) < centre.per_budget and lo > k_opt - 2 * centre.per_budget:
            lo -= 1
            add(lo)
    return chosen


@dataclasses.dataclass(frozen=True)
class Cell:
    id: str
    size: str
    budget: float
    n_params: int
    n_params_nonembedding: int
    flops_per_token: float
    tokens: int
    epochs: float | None  # None when the training split size is unknown
    n_layer: int
    d_model: int
    n_head: int
    ffn_hidden: int
    data_fraction: float = 1.0  # the unique-data subset it trains on (1: the whole train split)

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.n_params

    @property
    def chain(self) -> str:
        """The run its WSD stable phase belongs to: its size, on its unique data."""
        return chain_name(self.size, self.data_fraction)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.data_fraction == 1.0:  # the whole split: the record (and every hash of it) as before the axis
            del d["data_fraction"]
        d["tokens_per_param"] = self.tokens_per_param
        return d


@dataclasses.dataclass(frozen=True)
class TrainData:
    """What the grid knows of the train split: its next-token targets and, per data fraction, its subset's
    (U). ``subsets`` holds exact counts (from the store); a fraction without one is fraction x targets."""

    targets: int | None = None
    subsets: dict = dataclasses.field(default_factory=dict)

    def unique(self, fraction: float) -> int | None:
        if fraction in self.subsets:
            return int(self.subsets[fraction])
        return None if self.targets is None else int(round(fraction * self.targets))

    @classmethod
    def of_store(cls, tokens_dir: str | Path, fractions) -> "TrainData":
        """Exact U of every fraction from the token store's train split."""
        split = TokenSplit(Path(tokens_dir) / "train")
        return cls(split.n_targets, {float(f): subset_targets(split, data_subset(split, float(f))) for f in fractions})


def format_budget(budget: float) -> str:
    """3e11 -> '3e11', 1.5e12 -> '1p5e12', 100 -> '1e2'."""
    mant, exp = f"{float(budget):.6e}".split("e")
    mant = mant.rstrip("0").rstrip(".").replace(".", "p")
    return f"{mant}e{int(exp)}"


def format_fraction(fraction: float) -> str:
    """0.25 -> '0p25', 0.0625 -> '0p0625'."""
    return f"{float(fraction):.6g}".replace(".", "p")


def chain_name(size: str, fraction: float = 1.0) -> str:
    """A size on a unique-data subset: 'd32L2' on the whole split, 'd32L2_u0p25' on a quarter of it."""
    return size if fraction == 1.0 else f"{size}_u{format_fraction(fraction)}"


def parse_chain(chain: str) -> tuple[str, float]:
    """'d32L2_u0p25' -> ('d32L2', 0.25); 'd32L2' -> ('d32L2', 1.0); the inverse of :func:`chain_name`."""
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9.\-]*)(?:_u([0-9p]+))?", chain)
    if not match:
        raise EhrscaleError(f"not a size or size_u<fraction>: {chain!r}")
    return match.group(1), float(match.group(2).replace("p", ".")) if match.group(2) else 1.0


def cell_id(size: str, budget: float, fraction: float = 1.0) -> str:
    return f"C{format_budget(budget)}_{chain_name(size, fraction)}"


def parse_cell_id(cell: str) -> tuple[str, float, float]:
    """'C1p5e12_d32L2' -> ('d32L2', 1.5e12, 1.0), 'C3e11_d8L2_u0p25' -> ('d8L2', 3e11, 0.25); the inverse
    of :func:`cell_id`."""
    match = re.fullmatch(r"C([0-9p]+e-?[0-9]+)_(.+)", cell)
    if not match:
        raise EhrscaleError(f"not a cell id: {cell!r} (expected like C3e11_d32L2)")
    size, fraction = parse_chain(match.group(2))
    return size, float(match.group(1).replace("p", ".")), fraction


def resolve_sizes(sizes: Any) -> dict[str, dict[str, int]]:
    """The ladder from config: a mapping, or 'default' / 'debug' (None -> default)."""
    if sizes is None or sizes == "default":
        return dict(DEFAULT_SIZES)
    if sizes == "debug":
        return dict(DEBUG_SIZES)
    if isinstance(sizes, str):
        try:
            sizes = json.loads(sizes)
        except json.JSONDecodeError as err:
            raise EhrscaleError(f"model_sizes must be 'default', 'debug' or a JSON mapping: {err}") from err
    if not isinstance(sizes, dict) or not sizes:
        raise EhrscaleError("model_sizes must be a non-empty mapping {name: {n_layer, d_model, n_head}}")
    for name in sizes:
        if not _NAME_RE.match(str(name)):
            raise EhrscaleError(f"model_sizes: name {name!r} must match {_NAME_RE.pattern} (used in cell ids and paths)")
    return sizes


def plan_cells(
    sizes: dict[str, dict],
    grid: GridSettings,
    vocab_size: int,
    context_length: int,
    data: TrainData | int | None,
    model: ModelSettings | None = None,
    train: TrainSettings | None = None,
) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """All cells of the grid, split into (kept, [(dropped, reason)]), ordered by budget, data fraction
    (largest first) and size. ``data``: the train split's targets (an int) or :class:`TrainData` (U per
    fraction); None: epochs unknown. ``train`` (``TrainSettings``) adds the step-minimum drop.
    """
    data = data if isinstance(data, TrainData) else TrainData(data)
    model = dataclasses.replace(model or ModelSettings(), context_length=int(context_length))
    centre = load_settings(CentreSettings, grid.centre, "grid.centre") if grid.centre else None
    if centre and grid.sizes:
        raise EhrscaleError("grid.centre generates the sizes: leave grid.sizes empty")
    names = list(grid.sizes) or list(sizes)
    unknown = [] if centre else [n for n in names if n not in sizes]
    if unknown:
        raise EhrscaleError(f"grid.sizes names unknown size(s) {unknown}; the ladder has {list(sizes)}")
    if not grid.budgets:
        raise EhrscaleError("grid.budgets is empty: give at least one FLOP budget")
    if grid.min_tokens_per_param > grid.max_tokens_per_param:
        raise EhrscaleError("grid.min_tokens_per_param exceeds grid.max_tokens_per_param")
    kept: list[Cell] = []
    dropped: list[tuple[Cell, str]] = []
    ids = [format_budget(b) for b in grid.budgets]
    if len(set(ids)) != len(ids):
        raise EhrscaleError(f"grid.budgets has values that coincide at 7 significant digits: {sorted(grid.budgets)}")
    fractions = _check_fractions(grid.data_fractions)
    for budget in sorted(float(b) for b in grid.budgets):
        if not budget > 0:
            raise EhrscaleError(f"grid.budgets must be positive, got {budget}")
        for fraction in fractions:
            unique = data.unique(fraction)
            budget_sizes = (centred_sizes(centre, budget, vocab_size, model, unique) if centre
                            else {n: sizes[n] for n in names})
            for name, size in budget_sizes.items():
                cell = _cell(name, size, budget, fraction, unique, vocab_size, model)
                reason = _drop_reason(cell, grid, context_length, train)
                if reason:
                    dropped.append((cell, reason))
                else:
                    kept.append(cell)
    return kept, dropped


def _check_fractions(fractions) -> list[float]:
    out = sorted({float(f) for f in fractions}, reverse=True)
    if not out or not all(0 < f <= 1 for f in out):
        raise EhrscaleError(f"grid.data_fractions must be non-empty, each in (0, 1], got {fractions}")
    names = [format_fraction(f) for f in out]
    if len(set(names)) != len(names):
        raise EhrscaleError(f"grid.data_fractions has values that coincide at 6 significant digits: {fractions}")
    return out


def _cell(name: str, size: dict, budget: float, fraction: float, unique: int | None, vocab_size: int,
          model: ModelSettings) -> Cell:
    cfg = GPTConfig.from_size(size, vocab_size, model)
    counts = param_counts(cfg)
    fpt = flops_per_token(cfg)
    tokens = int(budget // fpt)
    return Cell(id=cell_id(name, budget, fraction), size=name, budget=budget, n_params=counts["total"],
                n_params_nonembedding=counts["non_embedding"], flops_per_token=fpt, tokens=tokens,
                epochs=tokens / unique if unique else None, n_layer=cfg.n_layer, d_model=cfg.d_model,
                n_head=cfg.n_head, ffn_hidden=cfg.ffn_hidden, data_fraction=fraction)


def _drop_reason(cell: Cell, grid: GridSettings, context_length: int, train: TrainSettings | None) -> str | None:
    """Why a cell leaves the grid, or None: too few tokens per parameter to inform the fit, too many, more
    passes over its unique data than the safety cap, or fewer optimizer steps than train.min_steps."""
    tpp = cell.tokens_per_param
    if cell.tokens < 1:
        return "budget buys less than one token"
    if tpp < grid.min_tokens_per_param:
        return f"tokens/param {tpp:.3g} < min_tokens_per_param {grid.min_tokens_per_param:g}"
    if tpp > grid.max_tokens_per_param:
        return f"tokens/param {tpp:.3g} > max_tokens_per_param {grid.max_tokens_per_param:g}"
    if cell.epochs is not None and cell.epochs > grid.max_epochs:
        return f"epochs {cell.epochs:.3g} > max_epochs {grid.max_epochs:g}"
    if train is not None and (steps := _steps(cell, context_length, train)) < train.min_steps:
        return f"{steps} steps < train.min_steps {train.min_steps} at its size's batch"
    return None


def _steps(cell: Cell, context_length: int, train: TrainSettings) -> int:
    return math.ceil(cell.tokens / (batch_size_for(cell.n_params, context_length, train) * context_length))


def size_definition(cell: Cell) -> dict[str, int]:
    """What ``model_sizes`` would hold for the cell's size (generated sizes have no config entry)."""
    return {"n_layer": cell.n_layer, "d_model": cell.d_model, "n_head": cell.n_head, "ffn_hidden": cell.ffn_hidden}


def stable_chains(cells: list[Cell], train: TrainSettings) -> dict[str, list[int]]:
    """WSD: each chain's branch points, ascending (its stable segments end at these token counts); a chain is
    a size on its unique data (:attr:`Cell.chain`)."""
    chains: dict[str, set[int]] = {}
    for c in cells:
        chains.setdefault(c.chain, set()).add(branch_point(c.tokens, train))
    return {chain: sorted(points) for chain, points in chains.items()}


def trained_tokens(cells: list[Cell], train: TrainSettings) -> dict[str, int]:
    """Tokens the grid trains under each schedule: every cell from scratch, or WSD chains + cooldowns."""
    chains = stable_chains(cells, train)
    cooldowns = sum(c.tokens - branch_point(c.tokens, train) for c in cells)
    return {"cosine": sum(c.tokens for c in cells), "wsd": sum(p[-1] for p in chains.values()) + cooldowns}


def smallest_cells(cells: list[Cell]) -> dict[str, Cell]:
    """Each size's cell with the fewest tokens (the cheapest run it has) on its most unique data."""
    smallest: dict[str, Cell] = {}
    for c in cells:
        best = smallest.get(c.size)
        if best is None or (-c.data_fraction, c.tokens) < (-best.data_fraction, best.tokens):
            smallest[c.size] = c
    return smallest


def sweep_multipliers(tune: dict | None, train: TrainSettings) -> list[float]:
    """The LR sweep's multiples of the width rule's LR (the ``tune`` section's ``lr_multipliers``);
    none when ``train.learning_rate`` pins the LR."""
    return [] if train.learning_rate else [float(m) for m in (tune or {}).get("lr_multipliers") or []]


def tune_cells(cells: list[Cell], tune: dict | None, train: TrainSettings) -> list[tuple[Cell, float]]:
    """The LR sweep: each size's smallest cell, once per multiplier (:func:`sweep_multipliers`)."""
    return [(c, m) for c in smallest_cells(cells).values() for m in sweep_multipliers(tune, train)]


def find_cell(cell: str, sizes, grid, vocab_size, context_length, train_tokens, model=None) -> Cell:
    """The kept cell with id ``cell``; an error naming the reason if it was dropped or is unknown."""
    kept, dropped = plan_cells(sizes, grid, vocab_size, context_length, train_tokens, model)
    for c in kept:
        if c.id == cell:
            return c
    for c, reason in dropped:
        if c.id == cell:
            raise EhrscaleError(f"cell {cell} is dropped from the grid: {reason}")
    raise EhrscaleError(f"cell {cell} is not in the grid; cells: {', '.join(c.id for c in kept)}")


def plan_from_config(config: dict, tokens_dir: str | Path) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """The grid for a workflow config once the tokens exist (vocab size, and U of every data fraction)."""
    stats = read_stats(tokens_dir)
    model = load_settings(ModelSettings, config.get("model"), "model")
    train = load_settings(TrainSettings, config.get("train"), "train")
    grid = load_settings(GridSettings, config.get("grid"), "grid")
    data = TrainData.of_store(tokens_dir, grid.data_fractions) if any(f < 1 for f in grid.data_fractions) \
        else TrainData(target_tokens_from_stats(stats, "train"))
    return plan_cells(resolve_sizes(config.get("model_sizes")), grid, int(stats["vocab_size"]), model.context_length,
                      data, model, train)


def single_cell_grid(cell: str, grid: GridSettings) -> dict:
    """A grid section holding only ``cell``, with its bounds opened.

    The workflow has already chosen the cell; passing the job this, not the whole grid,
    means adding budgets or sizes (or retuning the drop rules) never reruns trained cells.
    """
    size, budget, fraction = parse_cell_id(cell)
    one = {"sizes": [size], "budgets": [budget], "min_tokens_per_param": 0.0, "max_tokens_per_param": 1e30,
           "max_epochs": 1e30}
    return one | ({"data_fractions": [fraction]} if fraction < 1 else {})


def job_resources(cell: Cell, context_length: int, vocab_size: int, cluster: dict,
                  train: TrainSettings) -> dict[str, int]:
    """Scheduler estimates for one training job: ``runtime`` (minutes) and ``mem_mb``.

    Time is D / tokens_per_second, or FLOPs / (mfu * peak_flops) when a throughput is not
    given, times a safety factor. Memory is AdamW state (16 bytes a parameter) plus
    activations of the cell's rows per step (``train``'s batch rule) plus a fixed overhead
    for the runtime.
    """
    if cluster.get("tokens_per_second"):
        seconds = cell.tokens / float(cluster["tokens_per_second"])
    else:
        seconds = cell.tokens * cell.flops_per_token / (float(cluster["mfu"]) * float(cluster["peak_flops"]))
    minutes = max(float(cluster["min_runtime_minutes"]), seconds / 60 * float(cluster["runtime_factor"]))
    rows = batch_size_for(cell.n_params, context_length, train)
    activations = rows * context_length * (cell.n_layer * cell.d_model * 40 + vocab_size * 8)
    mem = 16 * cell.n_params + activations + 2 * 2**30
    return {"runtime": int(math.ceil(minutes)), "mem_mb": int(math.ceil(mem * 1.25 / 2**20))}
