"""The control plane's records in Redis: API keys, the audit log, the live rule set
and campaign budgets, and the stored outcome of each admin ``request_id``.

Plain async classes over redis-py, no gRPC; they raise the exceptions of
``loyalty.server.errors`` and leave Redis's own errors to the admin use-cases, which
answer them as CONTROL_STORE_UNAVAILABLE. May import: ``loyalty.actors`` (the rule
model, the shard's view of the rules keys, the outage log), ``loyalty.server.errors``,
``loyalty.server.page_tokens``, ``loyalty.server.limits``.
"""
