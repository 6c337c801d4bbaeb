"""The ``loyalty`` command: one module per subcommand and one connection helper.

The only place that reads flags, the environment and files; everything below it
receives typed values. May import anything in ``loyalty.server``.
"""
