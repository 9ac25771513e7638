"""PIE stage I in memory for the API: :func:`prune` and its :class:`PruneResult`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cltrace.pie import PieConfig
    from cltrace.prune import PruneConfig


def _method_key(name: str) -> str:
    """The registry key of a method name (``fap-synergy`` → ``fap_synergy``)."""
    from cltrace.prune import get_method

    return get_method(name).key


def _cell(entry: dict | None, metric: str) -> str:
    if entry is None or metric not in entry:
        return "-"
    m = entry[metric]
    if any(not isinstance(v, (int, float)) or math.isnan(v) for v in m.values()):
        return "nan"
    return f"{m['mean']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"


@dataclass
class PruneResult:
    """Stage-I results of :func:`prune`: per method and budget, metrics over the prompts."""

    results: dict
    """The aggregate, exactly as ``cltrace pie`` writes it to ``results.json``: per method and
    budget (a string key) each metric's ``mean``, ``low`` and ``high`` (95% bootstrap CI)."""
    records: list[dict] = field(repr=False)
    """One dict per prompt, as the lines of ``records.jsonl``."""
    config: PieConfig = field(repr=False)
    """The settings, as ``cltrace pie`` would save them in ``config.json``."""
    kept_units: dict[tuple[str, int], list[list[list]]] = field(repr=False)
    """Per (method, budget): per prompt, the kept occurrences ``[layer, feature, position,
    fap score]`` (seed 0 for randomised methods)."""

    @property
    def methods(self) -> list[str]:
        """The methods compared (registry keys)."""
        return list(self.config.methods)

    @property
    def budgets(self) -> list[int]:
        """The budgets K (units kept per prompt)."""
        return list(self.config.prune.budgets)

    @property
    def n_prompts(self) -> int:
        """Prompts scored."""
        return len(self.records)

    def mean(self, method: str, budget: int, metric: str = "kl") -> float:
        """Mean of ``metric`` over prompts for one method and budget."""
        return self._entry(method, budget)[metric]["mean"]

    def _entry(self, method: str, budget: int) -> dict:
        from cltrace.errors import UsageError

        key = _method_key(method)
        entry = self.results["methods"].get(key, {}).get(str(budget))
        if entry is None:
            raise UsageError(
                f"no results for method {key!r} at budget {budget}; methods run: "
                f"{', '.join(self.methods)}, budgets: {', '.join(map(str, self.budgets))}."
            )
        return entry

    def table(self, metric: str = "kl") -> str:
        """A printable table: mean ``metric`` with its 95% CI per method (rows) and budget."""
        budgets = self.budgets
        rows = [["method", *(f"K={k}" for k in budgets)]]
        for method in self.methods:
            by_k = self.results["methods"].get(method, {})
            rows.append([method, *(_cell(by_k.get(str(k)), metric) for k in budgets)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        name = "KL" if metric == "kl" else metric
        lines = [f"mean {name} over {self.n_prompts} prompts [95% bootstrap CI]"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]  # fmt: skip
        return "\n".join(lines)

    def kept_features(self, method: str, budget: int) -> list[dict]:
        """The (layer, feature) ids ``method`` keeps at ``budget`` on any prompt, most often kept
        first, with counts (the rows of ``kept_features.json``)."""
        from cltrace.pie.results import kept_features

        self._entry(method, budget)
        per_prompt = self.kept_units[(_method_key(method), budget)]
        return kept_features([{"interpret_kept": units} for units in per_prompt])

    def kept(self, method: str, budget: int) -> list[tuple[int, int]]:
        """The ``(layer, feature)`` ids ``method`` keeps at ``budget``, most often kept first
        (seed 0 for randomised methods); ``fap-synergy`` and ``fap_synergy`` are one method."""
        return [(f["layer"], f["feature"]) for f in self.kept_features(method, budget)]

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"PruneResult(n_prompts={self.n_prompts}, methods={self.methods}, "
            f"budgets={self.budgets})"
        )


def prune(
    model,
    transcoder,
    pairs,
    methods: Sequence[str] = ("fap", "fap_synergy", "random"),
    budgets: Sequence[int] = (50, 100, 200, 400, 800),
    config: PruneConfig | None = None,
    random_sweep: Sequence[int] = (),
    n_boot: int = 1000,
    allow_unk: bool = False,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> PruneResult:
    """PIE stage I in memory: keep ``budgets`` units per prompt with each method and measure
    what is lost (KL, logit difference, ...); nothing is written.

    ``model`` and ``transcoder`` are loaded objects or names (``None``: the bundled ones);
    ``pairs`` is a list of :class:`~cltrace.tasks.PromptPair` (see :func:`make_pairs`), a
    ``PairSet`` or a pair file. ``methods`` are registry keys (``-`` and ``_`` alike);
    ``config`` holds the other stage-I options (its budgets are replaced by ``budgets``);
    ``random_sweep`` adds budgets for the random baseline. With the same settings the numbers
    equal ``cltrace pie``'s ``results.json``. ``progress(done, total)`` is called per prompt.
    Pairs whose corrupted prompts do not change the behaviour are refused, as by ``cltrace
    pie`` (``force=True`` goes on with a warning).
    """
    from dataclasses import replace

    from cltrace.api.loading import as_model, as_pairs, as_transcoder
    from cltrace.errors import UsageError
    from cltrace.pie import PieConfig
    from cltrace.pie.results import aggregate
    from cltrace.pie.run import (
        check_behaviour,
        run_metric,
        score_prompt_kept,
        warn_small_active_sets,
    )
    from cltrace.prune import PruneConfig

    keys = list(dict.fromkeys(_method_key(m) for m in methods))
    if not keys:
        raise UsageError("methods is empty; name at least one method (e.g. fap, random).")
    ks = tuple(int(k) for k in budgets)
    if not ks or any(k < 1 for k in ks) or any(int(k) < 1 for k in random_sweep):
        raise UsageError(f"budgets must be positive integers, got {list(budgets)}.")
    if n_boot < 1:
        raise UsageError(f"n_boot must be at least 1, got {n_boot}.")
    adapter = as_model(model)
    tc = as_transcoder(transcoder, adapter)
    pairs = as_pairs(pairs, adapter, allow_unk=allow_unk)
    interp = "fap_synergy" if "fap_synergy" in keys else keys[0]
    cfg = PieConfig(
        n=len(pairs), model=getattr(adapter, "name", None), methods=tuple(keys),
        prune=replace(config or PruneConfig(), budgets=ks),
        random_sweep=tuple(int(k) for k in random_sweep), interpret_method=interp,
        interpret_budget=100 if 100 in ks else max(ks), n_boot=n_boot, allow_unk=allow_unk,
        # where the loaded objects already are: the settings a `cltrace pie` run would name
        device=str(adapter.device), dtype=str(adapter.dtype).removeprefix("torch."),
        lazy_decoders=getattr(tc, "lazy", None) is not None,
    )  # fmt: skip
    behaviour = check_behaviour(cfg, adapter, pairs, force, source="the pairs")
    records: list[dict] = []
    kept_units: dict[tuple, list] = {}
    for i, pair in enumerate(pairs):
        record, units = score_prompt_kept(i, pair, adapter, tc, cfg)
        records.append(record)
        for key, occ in units.items():
            kept_units.setdefault(key, []).append(occ)
        if progress:
            progress(i + 1, len(pairs))
    warn_small_active_sets(records, cfg)
    results = aggregate(records, cfg)
    results["metric"] = run_metric(cfg)
    results["behaviour"] = behaviour.to_json()
    return PruneResult(results, records, cfg, kept_units)
