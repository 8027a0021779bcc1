"""Paired statistics of the comparison: bootstrap intervals of a change over the same test items.

Every system is scored on the same held-out items, and scoring repeats bit for bit, so two
scorings of a task differ only where the programs differ. The change of a run (after - before)
and the difference between two systems are therefore *paired* per item: resampling items (with
replacement) and averaging the per-item differences gives a percentile bootstrap interval that
is far narrower than comparing two unpaired accuracies.

- :func:`paired_interval`: mean difference and its two-sided percentile interval (90% by default).
- :func:`separation`: on one task, the best system by mean score, and whether its paired
  interval against the runner-up (items pooled across seeds) excludes zero; if not, "no separation".

Example:
    >>> interval = paired_interval([1, 1, 0, 1], [0, 1, 0, 0])
    >>> interval.mean, interval.n
    (0.5, 4)
    >>> interval.low >= 0.0 and interval.high <= 1.0
    True
    >>> separation({"a": {(0, 1): 1.0, (0, 2): 0.0}, "b": {(0, 1): 1.0, (0, 2): 0.0}}).verdict
    'no separation'
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["CONFIDENCE", "RESAMPLES", "Interval", "Separation", "paired_interval", "separation"]

#: Two-sided confidence of every interval in the report.
CONFIDENCE = 0.90
#: Bootstrap resamples (enough for the percentiles to be stable to about 0.5 points).
RESAMPLES = 10_000
#: Seed of the resampling, so the report is the same every time it is made.
SEED = 0


@dataclass(frozen=True)
class Interval:
    """Mean paired difference over ``n`` items and its percentile bootstrap interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_interval(
    after: Sequence[float],
    before: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Paired percentile bootstrap of ``mean(after - before)`` over items (same order in both).

    Items are resampled with replacement ``resamples`` times; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the resampled means.

    Example (one item of ten gained: the resampled mean is k/10 with k ~ Binomial(10, 0.1), whose
    5th percentile is 0 and 95th is 0.3, since P(k <= 2) = 0.930 and P(k <= 3) = 0.987):
        >>> i = paired_interval([1] + [0] * 9, [0] * 10)
        >>> (i.mean, i.low, i.high)
        (0.1, 0.0, 0.3)
    """
    if len(after) != len(before):
        raise ValueError(f"paired scores need the same items: {len(after)} after, {len(before)} before")
    if not after:
        raise ValueError("no items to compare")
    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[picks].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    # Rounding to 1e-12 keeps float dust (0.30000000000000004) out of reports and comparisons.
    return Interval(round(float(diff.mean()), 12), round(float(low), 12), round(float(high), 12), len(diff), confidence)


@dataclass(frozen=True)
class Separation:
    """The verdict on one task: ``best`` is the top system if its interval against ``runner_up`` excludes zero."""

    best: str | None
    top: str | None
    runner_up: str | None
    interval: Interval | None
    means: dict[str, float]

    @property
    def verdict(self) -> str:
        if self.top is None:
            return "no runs"
        if self.runner_up is None:
            return f"only {self.top}"
        return f"best: {self.best}" if self.best else "no separation"

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "top": self.top,
            "runner_up": self.runner_up,
            "interval": self.interval.to_dict() if self.interval else None,
            "means": self.means,
            "verdict": self.verdict,
        }


def separation(scores: Mapping[str, Mapping[Hashable, float]], *, confidence: float = CONFIDENCE) -> Separation:
    """Who is best on a task, from each system's per-item scores after training.

    ``scores`` maps a system to ``{item key: score}``; a key is ``(seed, test item index)``, so
    items are pooled across seeds. Systems are ranked by mean score; the top one is "best" only
    where the paired interval of (top - runner-up), over the items both have, excludes zero.

    Example:
        >>> s = separation({"a": {(0, i): 1.0 for i in range(30)}, "b": {(0, i): float(i % 2) for i in range(30)}})
        >>> s.verdict, s.interval.mean
        ('best: a', 0.5)
    """
    means = {name: float(np.mean(list(items.values()))) for name, items in scores.items() if items}
    ranked = sorted(means, key=lambda name: (-means[name], name))
    if len(ranked) < 2:
        return Separation(None, ranked[0] if ranked else None, None, None, means)
    top, runner_up = ranked[0], ranked[1]
    shared = sorted(set(scores[top]) & set(scores[runner_up]), key=repr)
    if not shared:
        return Separation(None, top, runner_up, None, means)
    interval = paired_interval(
        [scores[top][k] for k in shared], [scores[runner_up][k] for k in shared], confidence=confidence
    )
    best = top if interval.low > 0.0 else None
    return Separation(best, top, runner_up, interval, means)
