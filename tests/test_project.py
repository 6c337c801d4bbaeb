"""Project-level promises: generated stubs match proto/, and the core stays pure."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_stubs_match_the_protos():
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"run `python proto/generate.py`:\n{result.stderr}"


def test_the_ledger_core_runs_without_ray_redis_or_grpc():
    # A fresh interpreter that refuses to import them, then uses the core.
    script = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "redis", "grpc", "google"}:
            raise ImportError("the core must not import " + name)
sys.meta_path.insert(0, Refuse())
from loyalty.actors.ledger import ShardCore, CompiledProgram, Program
from loyalty.actors.ledger import commands as c
core = ShardCore(CompiledProgram(Program()))
outcomes, record = core.apply_batch([c.EnrollMember("m", "r")], 1_000)
assert record is not None and len(outcomes) == 1
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_shard_actor_imports_nothing_from_the_gateway():
    # actors/ is the lower layer: a shard process must not pull in server/ (gRPC,
    # auth, the gateway's rules store) to run.
    script = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "loyalty.server" or name.startswith("loyalty.server.") or name.split(".")[0] == "grpc":
            raise ImportError("the shard actor must not import " + name)
sys.meta_path.insert(0, Refuse())
import loyalty.actors.shard.actor
import loyalty.actors.shard.rules_source
import loyalty.actors.shard.data_channel
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
