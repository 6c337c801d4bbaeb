"""The request path: gRPC in, validated commands to the shards, outcomes back out.

``servicer`` (LoyaltyService: read, route, answer), ``requests`` (protobuf -> commands,
one spec per command), ``fields`` (the field kinds those specs are made of, and their
compiled checks), ``responses`` (outcomes -> protobuf), ``routing`` (the router
protocol the servicer needs; no Ray), ``router`` (members to shards, one batcher
each), ``batcher`` (group commit per shard), ``shard_channel`` (the gateway's end of a
shard's TCP channel), ``health`` (SERVING only while every shard can journal).

May import: ``loyalty.actors`` (commands, outcomes, routing, the shard actor it
calls), ``loyalty.server.errors``, ``loyalty.server.limits``, ``loyalty.server.stores``
(the rules version the router adopts) and ``loyalty.v1``. Not admin, cli, runtime or
chaos.
"""
