"""Who may call what: the guard wrapped around every handler (keys, roles, scopes,
deadlines), the caller it establishes for each call (``caller``), per-key rate limits,
and the typed security settings (limits, TLS). The guard answers refusals; it builds
no admin objects (the runtime assembles them).

May import: ``loyalty.server.stores`` (keys, audit), ``loyalty.server.errors``,
``loyalty.server.limits``, ``loyalty.v1``. Not gateway, admin, cli, runtime or chaos.
"""
