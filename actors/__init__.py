"""The lower layer: the pure ledger core and the Ray shard actors that run it.

- ``ledger/``: the deterministic core (commands, events, state, the operations in
  ``ledger/ops/``, the rules engine); no Ray, Redis or gRPC imports, handed the time
  by its caller.
- ``shard/``: the thin Ray shell around the core, its Redis journal, its data channel,
  its snapshot schedule, its campaign budget leases and its side of the rules store.
- ``routing``: members to slots to shards; ``outage``: the outage log every component
  that depends on Redis shares; ``gc_tuning``: how shards and gateways run Python's
  cyclic GC.

Consumers of the journal (challenges, fraud) get a folder of their own here, each with
its pure core beside its shell. Nothing in ``loyalty.actors`` imports ``loyalty.server``.
"""
