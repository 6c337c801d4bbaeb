"""The shard: a thin Ray shell around the pure ledger core, with what it needs to
run: the Redis journal (write-ahead log, snapshots, epoch fencing), the data channel
the gateways send batches over, and the shard's side of the rules store.

May import: ``loyalty.actors.ledger``, ``loyalty.actors.routing``,
``loyalty.actors.outage``, ray and redis. Never ``loyalty.server``.
"""
