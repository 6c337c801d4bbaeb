"""Administration: the use-cases (``rules``, ``keys`` and the audit log), the one
change-then-audit policy they share (``changes``), and the AdminService servicer that
is their only gRPC part (``servicer``, with ``rules_proto`` for the rule messages).
The ``loyalty keys`` and ``loyalty rules`` commands reach the same use-cases, through
a server or (keys, with ``--redis-url``) directly.

May import: ``loyalty.server.stores``, ``loyalty.server.security``,
``loyalty.server.errors``, ``loyalty.server.page_tokens``, ``loyalty.server.limits``,
``loyalty.actors`` (the rule model) and ``loyalty.v1``. Not gateway, cli, runtime or
chaos.
"""
