"""The server side: everything between the network and the shard actors.

- ``gateway/``: the request path (LoyaltyService servicer, request and response
  conversion, routing, per-shard batching, the data-channel client, health).
- ``security/``: the guard around every handler, rate limits, TLS and limits settings.
- ``stores/``: the control plane's records in Redis (keys, audit, rules, admin replays).
- ``events/``: the ledger's journal records as loyalty.v1 Events, and their cursors.
- ``admin/``: the admin use-cases and the AdminService servicer over them.
- ``runtime/``: assembly, the supervised embedded Redis, Ray start-up, gateway processes.
- ``cli/``: the ``loyalty`` command, one module per subcommand.
- ``chaos/``: fault injection with a loss checker; nothing else imports it.
- ``errors``: the one error vocabulary and its mapping to gRPC; ``limits``: named limits;
  ``page_tokens``: the page-token codec of every List RPC.

Layers, lowest first: errors, limits and page_tokens; stores; security; gateway and
events; admin; runtime; cli and chaos. A module imports only from its own layer or
lower ones (tests/test_project.py checks it); ``loyalty.server`` may import
``loyalty.actors``, never the other way round.
"""
