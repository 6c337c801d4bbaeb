"""The shard: a thin Ray shell around the pure ledger core, with what it needs to
run: the Redis journal (write-ahead log, snapshots, epoch fencing), the data channel
the gateways send batches over, the shard's side of the rules store, when to snapshot
(``snapshots``) and the campaign budget chunks it holds (``budgets``). The shell
(``actor``) only wires them; ``snapshots`` and ``budgets`` run without Ray.

May import: ``loyalty.actors.ledger``, ``loyalty.actors.routing``,
``loyalty.actors.outage``, ray and redis. Never ``loyalty.server``.
"""
