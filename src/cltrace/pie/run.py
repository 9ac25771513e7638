"""The PIE stage-I job over a dataset: score, keep, measure retention, write a run directory.

Run directory layout::

    config.json        the resolved PieConfig plus the identity of its inputs (pair-file
                       content, model and transcoder files); a rerun must match it to resume
    records.jsonl      one line per prompt, appended as soon as the prompt is done (resume key)
    .lock              held while a process works in the directory (a second one is refused)
    results.json       aggregates per method and budget, with bootstrap CIs (written at the end)
    kept_features.json the (layer, feature) ids kept by the interpretation method, with counts

An interrupted run restarted with the same directory skips the prompts already in
``records.jsonl``; every prompt's computation depends only on its index, so the final
``results.json`` equals an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cltrace.dist import World, all_ok, barrier, together
from cltrace.errors import CltraceError, UsageError
from cltrace.files import RunLock, atomic_write_json, check_out_path
from cltrace.pie.rundir import (
    append_record,
    check_same_run,
    input_identity,
    merge_rank_records,
    rank_records,
    read_config,
    read_records,
)
from cltrace.prune import PruneConfig, ScoreContext, compute_components, get_method
from cltrace.prune.writes import CPU
from cltrace.retention import evaluate_kept

DEFAULT_METHODS = (
    "fap",
    "fap_synergy",
    "fap_signal",
    "act_mag",
    "relp",
    "factp",
    "acdc",
    "graph_influence",
    "random",
)


@dataclass
class PieConfig:
    """Everything that determines a PIE run (saved as ``config.json``)."""

    task: str = "ioi"
    """Task generator (``ioi`` or ``docstring``); ignored when ``data`` is given."""
    n: int = 200
    """Prompt pairs to generate."""
    seed: int = 0
    """Seed of the generated pairs."""
    data: str | None = None
    """A prompt-pair file (see docs/) instead of a generated task."""
    model: str | None = None
    """HF id or local directory; None = the bundled model."""
    transcoder: str | None = None
    """Transcoder directory or hub id; None = the bundled CLT."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Stage-I methods to compare (registry keys)."""
    prune: PruneConfig = field(default_factory=PruneConfig)
    """Scoring and selection options."""
    random_sweep: tuple[int, ...] = (1600, 3200, 6400)
    """Extra budgets for the random baseline, to find where it matches FAP (causal-sparsity gap)."""
    interpret_method: str = "fap_synergy"
    """Method whose kept features stages II and III explain."""
    interpret_budget: int = 100
    """Budget whose kept features stages II and III explain."""
    n_boot: int = 1000
    """Bootstrap resamples for confidence intervals."""
    allow_unk: bool = False
    """Read words of ``data`` the tokenizer does not know as its unk token (with a warning)."""
    device: str = "cpu"
    """Where the model, the transcoder and every stage's tensors live: ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps`` (``cuda`` under torchrun: each rank's own GPU)."""
    dtype: str = "float32"
    """Weights and activations: ``float32``, ``bfloat16`` or ``float16``; scores, metrics and
    KLs are reduced in float32 (or float64) whatever it is."""
    lazy_decoders: bool = False
    """Leave the transcoder's decoders on disk and read only the rows of active features,
    through a row cache bounded in bytes (large CLTs; results are identical)."""

    def __post_init__(self) -> None:
        from cltrace.precision import parse_dtype

        # registry keys: fap-synergy and fap_synergy name one method (as in get_method)
        self.methods = tuple(k.replace("-", "_") for k in self.methods)
        self.interpret_method = self.interpret_method.replace("-", "_")
        # one spelling per dtype (bf16 and bfloat16 resume each other); the device is checked
        # in validate(), since a saved config may name a GPU this machine lacks
        self.dtype = str(parse_dtype(self.dtype)).removeprefix("torch.")
        self.device = str(self.device).lower()

    def to_json(self) -> dict:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["random_sweep"] = list(self.random_sweep)
        d["prune"]["budgets"] = list(self.prune.budgets)
        return d

    @classmethod
    def from_json(cls, d: dict) -> PieConfig:
        d = dict(d)
        d.pop("inputs", None)  # identities of the inputs, saved beside the options
        prune = dict(d.pop("prune"))
        prune["budgets"] = tuple(prune["budgets"])
        return cls(
            **{
                **d,
                "methods": tuple(d["methods"]),
                "random_sweep": tuple(d["random_sweep"]),
                "prune": PruneConfig(**prune),
            }
        )


def run_metric(cfg: PieConfig) -> str:
    """The behaviour metric of a run: ``--metric``, else the task's default (pair files:
    ``logit_diff``)."""
    if cfg.prune.metric:
        return cfg.prune.metric
    if cfg.data is None:
        from cltrace.tasks import get_task

        return get_task(cfg.task).metric
    return "logit_diff"


def validate(cfg: PieConfig) -> None:
    """Check the options before anything is loaded or written (a typo fails at once)."""
    from cltrace.precision import parse_device
    from cltrace.tasks import get_task

    parse_device(cfg.device)
    if not cfg.methods:
        raise UsageError("--methods is empty; name at least one method (e.g. fap,random).")
    for key in cfg.methods:
        get_method(key)
    if cfg.interpret_method not in cfg.methods:
        raise UsageError(
            f"the interpretation method {cfg.interpret_method!r} is not among the methods run "
            f"({', '.join(cfg.methods)}); add it to --methods."
        )
    if cfg.data is None:
        get_task(cfg.task)
        if cfg.n < 1:
            raise UsageError(f"--n must be at least 1, got {cfg.n}.")
    elif not Path(cfg.data).is_file():
        what = "a directory" if Path(cfg.data).is_dir() else "missing"
        raise UsageError(f"the pair file {cfg.data} is {what}; pass --data an existing file.")
    if cfg.n_boot < 1:
        raise UsageError(f"n_boot must be at least 1, got {cfg.n_boot}.")
    if not all(isinstance(k, int) and k > 0 for k in cfg.random_sweep):
        raise UsageError(f"random_sweep must hold positive budgets, got {cfg.random_sweep}.")


def _load_pairs(cfg: PieConfig, adapter):
    from cltrace.tasks import check_pairs, get_task, read_pairs

    if cfg.data:
        pairs = read_pairs(cfg.data).pairs
        check_pairs(pairs, adapter, cfg.data, allow_unk=cfg.allow_unk)
        return pairs
    return get_task(cfg.task).make_pairs(adapter, cfg.n, seed=cfg.seed)


def score_prompt(index: int, pair, adapter, transcoder, cfg: PieConfig) -> dict:
    """All methods and budgets on one prompt: its ``records.jsonl`` line."""
    return score_prompt_kept(index, pair, adapter, transcoder, cfg, every_set=False)[0]


def load_inputs(cfg: PieConfig, spread: Mapping[str, Any] | None = None):
    """The model and transcoder of a run, on its device and in its dtype (``cuda`` under
    torchrun: this rank's GPU); ``spread``: ``load_model``'s ``device_map`` and
    ``offload_folder`` (the transcoder then sits on the model's home device)."""
    from cltrace.models import load_model
    from cltrace.paths import BUNDLED_CLT_DIR
    from cltrace.precision import parse_dtype, rank_device
    from cltrace.transcoders import load_transcoder

    adapter = load_model(
        cfg.model, device=rank_device(cfg.device), dtype=parse_dtype(cfg.dtype), **(spread or {})
    )
    transcoder = load_transcoder(
        cfg.transcoder or BUNDLED_CLT_DIR,
        model=adapter,
        lazy_decoder=cfg.lazy_decoders,
        device=adapter.device,
        dtype=adapter.dtype,
    )
    return adapter, transcoder


def score_prompt_kept(
    index: int, pair, adapter, transcoder, cfg: PieConfig, every_set: bool = True
) -> tuple[dict, dict[tuple[str, int], list[list]]]:
    """:func:`score_prompt` plus the kept sets of seed 0: ``{(method, K): units}``, each unit
    ``[layer, feature, position, fap score]`` as in the record's ``interpret_kept``; every
    method and budget, or with ``every_set=False`` only the interpretation method's."""
    comps = compute_components(
        adapter, transcoder, pair, cfg.prune.policy, cfg.prune.grad_mode, run_metric(cfg)
    )
    ctx = ScoreContext(comps, transcoder, cfg.prune, prompt_index=index)
    budgets = list(cfg.prune.budgets)
    kept: dict[tuple[str, int, int], torch.Tensor] = {}
    timings = {}
    for key in cfg.methods:
        method = get_method(key)
        seeds = range(cfg.prune.random_seeds) if method.randomized else [0]
        extra = list(cfg.random_sweep) if key == "random" else []
        t0 = time.perf_counter()
        for seed in seeds:
            for k, units in method.select(ctx, budgets + extra, seed).items():
                kept[(key, k, seed)] = units
        timings[key] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows, ref = evaluate_kept(ctx, kept)
    timings["evaluate"] = time.perf_counter() - t0
    units = {
        (key, k): _kept_units(ctx, comps, chosen)
        for (key, k, seed), chosen in kept.items()
        if seed == 0 and (every_set or (key, k) == (cfg.interpret_method, cfg.interpret_budget))
    }
    record = {
        "index": index,
        "clean": pair.clean,
        "answer": pair.answers[0],
        "n_occurrences": comps.n,
        "n_units": ctx.n_units,
        **ref,
        "results": [r.to_json() for r in rows],
        "interpret_kept": units.get((cfg.interpret_method, cfg.interpret_budget), []),
        "seconds": timings,
    }
    return record, units


def _kept_units(ctx: ScoreContext, comps, chosen: torch.Tensor) -> list[list]:
    """The occurrences of the kept units: ``[layer, feature, position, fap score]`` each."""
    member = torch.zeros(ctx.n_units, dtype=torch.bool, device=CPU)
    member[chosen] = True
    occ = member[ctx.groups].nonzero().squeeze(1)
    scores = ctx.fap[ctx.groups[occ]]
    return [
        [int(comps.layer[o]), int(comps.feature[o]), int(comps.position[o]), float(s)]
        for o, s in zip(occ.tolist(), scores.tolist(), strict=True)
    ]


def run_pie(
    cfg: PieConfig,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
    force: bool = False,
    world: World | None = None,
    spread: Mapping[str, Any] | None = None,
) -> dict:
    """Run (or resume) stage I over the dataset and write the run directory; returns results.

    A new run first checks that the pairs show a behaviour the corrupted prompts change
    (:mod:`cltrace.pie.behaviour`); ``force`` goes on when they do not.

    ``stop_after`` processes at most that many new prompts, then returns without aggregating
    (used to test interruption and resumption). Under torchrun (``world`` of several
    processes) the prompts still to do are shared across ranks, each appending to its own
    ``records.rank<r>.jsonl``; rank 0 merges them, writes the results and returns them (the
    other ranks return ``{}``). The results equal a one-process run's.

    ``spread``: ``load_model``'s ``device_map`` and ``offload_folder`` for a model too large
    for one device; not part of the run's identity (the results are the same).
    """
    from cltrace.pie.results import aggregate, write_outputs

    validate(cfg)
    world = world or World()
    out = Path(out)
    check_out_path(out, "run directory")
    if out.is_dir() and world.is_main:
        with RunLock(out):  # a directory in use fails now, not after the model has loaded
            pass
    adapter, transcoder = load_inputs(cfg, spread)
    pairs = _load_pairs(cfg, adapter)
    wanted = {**cfg.to_json(), "inputs": input_identity(cfg)}
    lock = RunLock(out) if world.is_main else contextlib.nullcontext()
    with lock:
        failure, done = None, {}
        if world.is_main:
            try:
                saved = read_config(out)
                if saved is None:
                    _check_behaviour(cfg, adapter, pairs, out, force)
                    atomic_write_json(out / "config.json", wanted)
                else:
                    # options added since the run started take their defaults, which are
                    # what the older cltrace did
                    defaults = {k: v for k, v in PieConfig().to_json().items() if k not in saved}
                    check_same_run(out, {**defaults, **saved}, wanted)
                merge_rank_records(out)  # what the ranks of an interrupted run finished
                done = read_records(out, len(pairs))  # damaged lines set aside before others read
            except CltraceError as exc:
                failure = exc
        if not all_ok(world, failure is None):
            raise failure or CltraceError(
                f"rank 0 stopped before stage I in {out}; its message says why."
            )
        if not world.is_main:
            done = read_records(out, len(pairs))
        rec_path = out / "records.jsonl"
        if world.distributed:
            rec_path = rank_records(out, world.rank)
        todo = [i for i in range(len(pairs)) if i not in done]
        mine = todo[world.rank :: world.size]  # computing a prompt depends on its index only
        if progress:  # the first call says how many prompts a resumed run already has
            progress(len(done), len(pairs))
        for count, i in enumerate(mine):
            if stop_after is not None and count >= stop_after:
                return {}
            append_record(rec_path, score_prompt(i, pairs[i], adapter, transcoder, cfg))
            if progress:
                progress(len(done) + (count + 1) * world.size, len(pairs))
        barrier(world)
        results: dict = {}
        # the other ranks wait until the outputs are written: stage II reads kept_features.json
        with together(world, "while rank 0 merged stage I"):
            if world.is_main:
                merge_rank_records(out)
                records = [json.loads(line) for line in read_records(out, len(pairs)).values()]
                records.sort(key=lambda r: r["index"])
                warn_small_active_sets(records, cfg)
                results = aggregate(records, cfg)
                results["metric"] = run_metric(cfg)
                if (out / "behaviour.json").is_file():
                    results["behaviour"] = json.loads((out / "behaviour.json").read_text())
                write_outputs(out, records, results, cfg)
    return results


def check_behaviour(cfg: PieConfig, adapter, pairs, force: bool, source: str | None = None):
    """Measure clean versus corrupted metric on ``pairs``; raise (unless ``force``, which
    warns) when there is nothing to explain. Returns the
    :class:`~cltrace.pie.behaviour.Behaviour`."""
    from cltrace.pie.behaviour import measure_behaviour

    found = measure_behaviour(adapter, pairs, run_metric(cfg), cfg.allow_unk)
    problem = found.problem(source or cfg.data or f"the {cfg.task} pairs")
    if problem and not force:
        raise CltraceError(problem)
    if problem:
        warnings.warn(problem.replace(", or pass --force to go on", "").rstrip(".") +
                      "; going on (--force).", stacklevel=2)  # fmt: skip
    return found


def _check_behaviour(cfg: PieConfig, adapter, pairs, out: Path, force: bool) -> None:
    """:func:`check_behaviour` for a new run directory; the numbers go to ``behaviour.json``."""
    found = check_behaviour(cfg, adapter, pairs, force)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "behaviour.json", found.to_json())


def warn_small_active_sets(records: list[dict], cfg: PieConfig) -> None:
    """Say once when a budget exceeds some prompts' units (there every unit is kept)."""
    k = max(cfg.prune.budgets)
    short = [r["n_units"] for r in records if r["n_units"] < k]
    if short:
        warnings.warn(
            f"K={k} exceeds the {cfg.prune.unit} units of {len(short)} of {len(records)} prompts "
            f"(fewest {min(short)}); there the kept set is every unit, so the larger budgets "
            "measure nothing new",
            stacklevel=2,
        )
