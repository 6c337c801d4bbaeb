"""Assembling and running a server: the embedded Redis and its supervisor, Ray
start-up, the gateway processes, logging, and running a server in a background
thread for programs that drive one from blocking code.

May import: ``loyalty.server.gateway``, ``security``, ``stores``, ``admin`` and
``loyalty.actors``. Not cli or chaos.
"""
