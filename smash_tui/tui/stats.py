"""Rank correlations and the Pareto front, in plain Python.

The app never imports numpy or scipy on its start-up path (they cost
hundreds of milliseconds). Correlations run over retrained architectures (a
few) or over every scored cell of a benchmark search (up to 6,466 for
nb201), so Kendall tau uses Knight's O(n log n) algorithm.
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

    Knight's O(n log n) count, so a search's thousands of scored architectures
    are ranked against a benchmark table in milliseconds: sort by (x, y), then
    count the swaps a merge sort by y makes (each is a discordant pair).

    Args:
        xs: First values.
        ys: Second values, paired with ``xs`` by position.
    """
    _check_lengths(xs, ys)
    n = len(xs)
    pairs = sorted(zip(xs, ys))
    total = n * (n - 1) // 2
    tied_x = _tied_pairs([x for x, _ in pairs])
    tied_both = _tied_pairs(pairs)
    by_y = [y for _, y in pairs]
    discordant = _sort_counting_swaps(by_y)
    tied_y = _tied_pairs(by_y)  # sorted now
    # Pairs tied on both sides count in neither denominator term, as in tau-b.
    denominator = math.sqrt((total - tied_x) * (total - tied_y))
    if denominator == 0:
        return None
    concordant_minus_discordant = total - tied_x - tied_y + tied_both - 2 * discordant
    return concordant_minus_discordant / denominator


def _tied_pairs(values: Sequence[object]) -> int:
    """Pairs of equal values in a sorted sequence."""
    tied = run = 0
    for index in range(1, len(values)):
        run = run + 1 if values[index] == values[index - 1] else 0
        tied += run
    return tied


def _sort_counting_swaps(values: list[float]) -> int:
    """Sort ``values`` in place (stable merge sort); return the pairs it found out of order.

    Equal values are never counted: a pair tied in y is neither concordant nor discordant.
    """
    swaps = 0
    width = 1
    n = len(values)
    buffer = values[:]
    while width < n:
        for start in range(0, n, 2 * width):
            middle, end = min(start + width, n), min(start + 2 * width, n)
            left, right, out = start, middle, start
            while left < middle and right < end:
                if values[right] < values[left]:
                    buffer[out] = values[right]
                    swaps += middle - left  # it jumps every value left in the first half
                    right += 1
                else:
                    buffer[out] = values[left]
                    left += 1
                out += 1
            buffer[out : out + middle - left] = values[left:middle]
            out += middle - left
            buffer[out : out + end - right] = values[right:end]
        values[:] = buffer
        width *= 2
    return swaps


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
