"""Shard actors and the pure ledger core they wrap.

``loyalty.actors.ledger`` is the deterministic core (no Ray, Redis or gRPC imports);
``loyalty.actors.journal`` is the Redis journal; ``loyalty.actors.shard`` is the thin
Ray shell that joins the two.
"""
