"""How every long-running process of the server runs Python's cyclic GC.

Shards and gateways allocate many short-lived objects per call (commands, events,
outcomes, protobuf messages) and almost never a reference cycle; the hot-path types
are msgspec Structs with gc=False where they hold no cycles. With Python's defaults
a young collection runs every 700 allocations and costs more than the few cycles it
finds (the benchmark saw the GC at about 20% of a gateway's CPU), and a full
collection walks every long-lived object (a shard's recovered state made those
pauses 0.6 s). So young collections run far less often, and what start-up or
recovery built is frozen out of the collector's view.

Imports nothing but the standard library: ``loyalty.server`` uses it too.
"""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000
"""Collect young objects after this many allocations instead of Python's 700."""

GC_THRESHOLDS = (GC_YOUNG_THRESHOLD, 50, 100)
"""gc.set_threshold arguments: the young threshold, then a middle collection every
50 young ones and a full one every 100 middle ones (Python's defaults: 10 and 10),
so full collections are rarer still."""


def collect_young_less_often() -> None:
    """Set GC_THRESHOLDS (before a process builds its long-lived state: a shard's
    recovery allocates millions of objects, and default thresholds would run full
    collections over the growing state all along)."""
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_long_lived() -> None:
    """Collect once, then move every object that survived into the permanent
    generation, which collections never walk (after start-up or a shard's recovery)."""
    gc.collect()
    gc.freeze()


def tune_gc() -> None:
    """Freeze what start-up built and collect young objects less often (a gateway's
    start-up; a shard calls the two halves at their own times)."""
    freeze_long_lived()
    collect_young_less_often()
