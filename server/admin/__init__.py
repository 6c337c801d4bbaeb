"""Administration: the use-cases (rules, keys, audit) and the AdminService servicer
that exposes them over gRPC.

May import: ``loyalty.server.stores``, ``loyalty.server.security``,
``loyalty.server.errors``, ``loyalty.server.limits``, ``loyalty.actors`` (the rule
model) and ``loyalty.v1``. Not gateway, cli, runtime or chaos.
"""
