"""Who may call what: the guard wrapped around every handler (keys, roles, scopes,
deadlines), per-key rate limits, and the typed security settings (limits, TLS).

May import: ``loyalty.server.stores`` (keys, audit), ``loyalty.server.errors``,
``loyalty.server.limits``, ``loyalty.v1``. Not gateway, admin, cli, runtime or chaos.
"""
