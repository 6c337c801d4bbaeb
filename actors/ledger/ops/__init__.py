"""The ledger's operations, one module per family, each read top to bottom as its
decide and evolve functions:

- ``decide_<operation>(ledger, command, member, now_ms, digest) -> event``: what the
  command does, with every choice made (points, lots, ids); changes nothing. A
  business refusal is a ``Failed`` event, kept for replays like any answer.
- ``evolve_<event>(ledger, event) -> bytes | None``: the only code that changes
  state, run alike for live commands and journal replay; returns the encoded
  Outcome the event answers (None for time-driven and shard-level events).

Modules, lower first: ``views`` (a member as shown outside: balance, identity),
``book`` (lots and the history every family writes, with the conservation check),
``idempotency`` (fingerprints, stored outcomes, replays, failures), then the families
``enroll``, ``earn`` (and campaign budgets), ``holds`` (redeem, reserve, capture,
release, reservation expiry), ``returns``, ``adjust``, ``expiry`` (settling what
time made due: expired holds and lots, forgotten outcomes) and ``reads``.

The ``Ledger`` (``loyalty.actors.ledger.ledger``) holds the state and the dispatch
tables and is the only caller; functions here are module-level (no method lookups on
the hot path) and take it as their first argument.

May import: the standard library, msgspec and the rest of ``loyalty.actors.ledger``
(commands, events, state, outcomes, limits, program, earning, rules). Pure: never
ray, redis, grpc or google.protobuf, nor ``loyalty.actors.shard`` or
``loyalty.server`` (tests/test_project.py runs the core without them).
"""
