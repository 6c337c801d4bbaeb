"""Fault injection with a checker that can see loss (``loyalty chaos``).

A product feature that nothing else imports. May import: ``loyalty.server.runtime``,
``loyalty.actors``, ``loyalty.v1``.
"""
