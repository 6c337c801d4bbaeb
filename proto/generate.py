"""Regenerate the Python stubs for every .proto under proto/.

Run from anywhere:  python proto/generate.py
The stubs land beside their .proto files (proto/loyalty/v1/*_pb2*.py[i]) and are
installed as the package ``loyalty.v1``. ``--check`` regenerates into a temporary
directory and exits 1 if the committed stubs differ (the test suite runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import sys
import tempfile

import google.rpc
import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _include_paths() -> list[str]:
    """protoc -I paths: our protos, protobuf's well-known types, google.rpc's protos."""
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    common_protos = pathlib.Path(list(google.rpc.__path__)[0]).parent.parent
    return [str(PROTO_ROOT), str(well_known), str(common_protos)]


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write stubs for every proto file into out_dir; return the files written."""
    sources = sorted(PROTO_ROOT.rglob("*.proto"))
    args = ["grpc_tools.protoc"]
    args += [f"-I{path}" for path in _include_paths()]
    args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [str(source.relative_to(PROTO_ROOT)) for source in sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def check() -> int:
    """Return 0 if the committed stubs equal freshly generated ones, else 1."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        drifted = []
        for path in generate(fresh):
            committed = PROTO_ROOT / path.relative_to(fresh)
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                drifted.append(str(committed.relative_to(PROTO_ROOT)))
    for name in drifted:
        print(f"stale or missing generated file: proto/{name}", file=sys.stderr)
    return 1 if drifted else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs drifted")
    options = parser.parse_args()
    if options.check:
        return check()
    for path in generate(PROTO_ROOT):
        print(f"wrote proto/{path.relative_to(PROTO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
