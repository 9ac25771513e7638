"""Is there a behaviour to explain? Clean versus corrupted metric on a run's pairs, before stage I.

PIE measures how much of the clean-versus-corrupted difference a pruned circuit keeps. When the
corrupted prompts do not change the metric, or the model does not show the behaviour on the
clean prompts, any KL it reports is noise around nothing. The check runs every pair's clean and
corrupted prompt once (a forward each) and compares the means of the run's metric:

- present: the clean mean is above zero by more than twice its standard error;
- changed: the paired clean-minus-corrupted mean is above twice its standard error and above a
  tenth of the clean mean.

A run stops before stage I when either fails (``--force`` goes on); the numbers are kept in
``behaviour.json`` and shown in ``results.json`` and the report either way.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

from cltrace.errors import CltraceError


@dataclass
class Behaviour:
    """Clean and corrupted metric over a run's pairs."""

    metric: str
    n_pairs: int
    clean_mean: float
    corrupt_mean: float
    difference: float
    """Mean of clean minus corrupted, pair by pair."""
    difference_se: float
    clean_se: float
    clean_top1: float
    """Share of pairs whose first answer is the model's top prediction on the clean prompt."""

    @property
    def present(self) -> bool:
        return self.clean_mean > 2 * self.clean_se

    @property
    def changed(self) -> bool:
        floor = max(2 * self.difference_se, 0.1 * abs(self.clean_mean))
        return self.difference > floor

    def to_json(self) -> dict:
        return {**asdict(self), "present": self.present, "changed": self.changed}

    def problem(self, source: str) -> str | None:
        """One sentence saying what is wrong, or None."""
        nums = (
            f"mean {self.metric} {self.clean_mean:.4g} clean, {self.corrupt_mean:.4g} corrupted "
            f"over {self.n_pairs} pairs (difference {self.difference:.3g} +- "
            f"{self.difference_se:.2g})"
        )
        if not self.present:
            return (
                f"the model does not show the behaviour on {source}: {nums}, top-1 "
                f"{self.clean_top1:.2f}; check the pairs or the model, or pass --force to go on."
            )
        if not self.changed:
            return (
                f"the corrupted prompts of {source} do not change the behaviour: {nums}; PIE "
                "would measure noise, so check the pairs, or pass --force to go on."
            )
        return None


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("inf")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def measure_behaviour(adapter, pairs, metric: str, allow_unk: bool = False) -> Behaviour:
    """Clean and corrupted ``metric`` over ``pairs`` (see the module docstring)."""
    from cltrace.tasks.evaluate import evaluate_pairs

    if not pairs:
        raise CltraceError("there are no prompt pairs to measure; give at least one pair.")
    with warnings.catch_warnings():  # the pairs were checked (and any unknown word said) already
        warnings.simplefilter("ignore")
        clean = evaluate_pairs(adapter, pairs, metric=metric, allow_unk=allow_unk)
        corrupt = evaluate_pairs(adapter, pairs, corrupt=True, metric=metric, allow_unk=allow_unk)
    assert clean.values is not None and corrupt.values is not None
    c = clean.values.tolist()
    k = corrupt.values.tolist()
    cm, cse = _mean_se(c)
    km, _ = _mean_se(k)
    dm, dse = _mean_se([a - b for a, b in zip(c, k, strict=True)])
    return Behaviour(metric, len(pairs), cm, km, dm, dse, cse, clean.top1_accuracy)
