"""Rank correlations and the Pareto front, in plain Python.

The app never imports numpy or scipy on its start-up path (they cost
hundreds of milliseconds), and the sizes here are small: correlations are
over retrained architectures (each one costs minutes of training), so the
quadratic Kendall tau is fine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True)
class Correlation:
    """How well one ranking agrees with another."""

    pairs: int  # number of (x, y) pairs
    kendall_tau: float | None  # tau-b in [-1, 1]; None with fewer than 2 pairs or a constant side
    spearman_rho: float | None  # rho in [-1, 1]; None with fewer than 2 pairs or a constant side
    tau_chance_sd: float | None  # tau's spread between unrelated rankings; None with fewer than 2 pairs


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties counted as in scipy.stats.kendalltau), or None when undefined.

    Args:
        xs: First values.
        ys: Second values, paired with ``xs`` by position.
    """
    _check_lengths(xs, ys)
    n = len(xs)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = xs[i] - xs[j]
            dy = ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    # Pairs tied on both sides count in neither denominator term, as in tau-b.
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator


def tau_chance_sd(pairs: int) -> float | None:
    """Standard deviation of Kendall's tau between two unrelated rankings of ``pairs`` items.

    Each retrain costs minutes, so the proxy is judged on few pairs, where chance
    alone moves tau a lot: over 10 pairs this is 0.25, so a tau of 0.2 there says
    little. Exact for rankings without ties (Kendall, 1938).
    """
    if pairs < 2:
        return None
    return math.sqrt(2 * (2 * pairs + 5) / (9 * pairs * (pairs - 1)))


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end) / 2 + 1
        for position in range(start, end + 1):
            result[order[position]] = shared
        start = end + 1
    return result


def spearman_rho(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson correlation of the ranks), or None when undefined.

    Args:
        xs: First values.
        ys: Second values, paired with ``xs`` by position.
    """
    _check_lengths(xs, ys)
    if len(xs) < 2:
        return None
    rank_x, rank_y = ranks(xs), ranks(ys)
    mean = (len(xs) + 1) / 2  # mean of 1..n, also with averaged ties
    cov = sum((a - mean) * (b - mean) for a, b in zip(rank_x, rank_y))
    var_x = sum((a - mean) ** 2 for a in rank_x)
    var_y = sum((b - mean) ** 2 for b in rank_y)
    if var_x == 0 or var_y == 0:
        return None
    return cov / math.sqrt(var_x * var_y)


def correlation(xs: Sequence[float], ys: Sequence[float]) -> Correlation:
    """Kendall tau-b and Spearman rho of paired values.

    Args:
        xs: First values.
        ys: Second values, paired with ``xs`` by position.
    """
    return Correlation(len(xs), kendall_tau(xs, ys), spearman_rho(xs, ys), tau_chance_sd(len(xs)))


def pareto_front(points: Sequence[tuple[float, float, _T]]) -> list[tuple[float, float, _T]]:
    """The points no other point beats on both coordinates (both minimised).

    A point is on the front when every point with a smaller or equal cost has
    a strictly higher error. Ties keep the first point given.

    Args:
        points: (cost, error, payload) triples, e.g. (params, SMASH error, row id).

    Returns:
        The front, by increasing cost (and so decreasing error).
    """
    front: list[tuple[float, float, _T]] = []
    best = math.inf
    for point in sorted(points, key=lambda item: (item[0], item[1])):
        if point[1] < best:
            front.append(point)
            best = point[1]
    return front


def _check_lengths(xs: Sequence[float], ys: Sequence[float]) -> None:
    if len(xs) != len(ys):
        raise ValueError(f"paired values differ in length: {len(xs)} and {len(ys)}")
