"""Points for a purchase, attributed to its lines, and clawed back line by line.

All arithmetic is on integers and exact fractions: a purchase earns
floor(total_minor x points_per_minor) points, never more, and the lines' shares add
up to exactly that total, so returning every line claws back exactly what was earned.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence


def attribute_points(
    amounts_minor: Sequence[int], points_per_minor: fractions.Fraction
) -> tuple[int, list[int]]:
    """Points for the whole purchase and each line's share of them.

    The total is rounded down once. Each line gets the floor of its exact share, and
    the few points left over by those floors go to the lines with the largest
    remainders (ties to the earlier line), so shares are fair and sum to the total.
    """
    numerator, denominator = points_per_minor.numerator, points_per_minor.denominator
    exact = [amount * numerator for amount in amounts_minor]  # each is points x denominator
    total = sum(exact) // denominator
    shares = [value // denominator for value in exact]
    leftover = total - sum(shares)
    assert 0 <= leftover <= len(shares), "floors of shares lose less than one point each"
    if leftover:
        by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] % denominator), i))
        for index in by_remainder[:leftover]:
            shares[index] += 1
    return total, shares


def returned_share(line_points: int, line_quantity: int, returned_before: int, returning: int) -> int:
    """Points to claw back when ``returning`` more units of a line come back.

    Computed as the difference of cumulative shares, so however a line is returned
    (all at once or unit by unit) the claw-backs add up to exactly line_points.
    """
    assert 0 < returning and returned_before + returning <= line_quantity
    after = line_points * (returned_before + returning) // line_quantity
    before = line_points * returned_before // line_quantity
    return after - before
