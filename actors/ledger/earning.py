"""Points for a purchase, attributed to its lines, and clawed back line by line.

All arithmetic is on integers and exact fractions: a purchase earns
floor(total_minor x points_per_minor) points, never more, and the lines' shares add
up to exactly that total, so returning every line claws back exactly what was earned.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence


def attribute_points(
    amounts_minor: Sequence[int], points_per_minor: tuple[int, int]
) -> tuple[int, list[int]]:
    """Points for the whole purchase and each line's share of them, at an exact rate
    given as (numerator, denominator) (see ``rate_parts``).

    The total is rounded down once. Each line gets the floor of its exact share, and
    the few points left over by those floors go to the lines with the largest
    remainders (ties to the earlier line), so shares are fair and sum to the total.
    """
    numerator, denominator = points_per_minor
    shares = []
    remainders = []  # a line's exact share is share + remainder / denominator
    for amount in amounts_minor:
        share, remainder = divmod(amount * numerator, denominator)
        shares.append(share)
        remainders.append(remainder)
    leftover = sum(remainders) // denominator  # what the floors lost, in whole points
    assert 0 <= leftover <= len(shares), "floors of shares lose less than one point each"
    if leftover > 3:  # a large basket: one stable sort (ties keep the earlier line first)
        ranked = sorted(range(len(remainders)), key=remainders.__getitem__, reverse=True)
        for index in ranked[:leftover]:
            shares[index] += 1
    else:  # the usual case: a pass or three are cheaper than a sort
        for _ in range(leftover):
            best = remainders.index(max(remainders))  # the first of the largest
            shares[best] += 1
            remainders[best] = -1
    return sum(shares), shares


def rate_parts(points_per_minor: fractions.Fraction) -> tuple[int, int]:
    """An exact rate as the (numerator, denominator) ``attribute_points`` takes."""
    return points_per_minor.numerator, points_per_minor.denominator


def returned_share(line_points: int, line_quantity: int, returned_before: int, returning: int) -> int:
    """Points to claw back when ``returning`` more units of a line come back.

    Computed as the difference of cumulative shares, so however a line is returned
    (all at once or unit by unit) the claw-backs add up to exactly line_points.
    """
    assert 0 < returning and returned_before + returning <= line_quantity
    after = line_points * (returned_before + returning) // line_quantity
    before = line_points * returned_before // line_quantity
    return after - before
