"""How the ``loyalty keys`` and ``loyalty rules`` commands reach a server's AdminService:
the same flags, the same channel and the same credentials for both."""

from __future__ import annotations

import argparse
import os
import pathlib


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """--target, --api-key and the TLS flags."""
    parser.add_argument(
        "--target",
        default=os.environ.get("LOYALTY_TARGET", "127.0.0.1:50051"),
        help="server host:port (default $LOYALTY_TARGET, else 127.0.0.1:50051)",
    )
    parser.add_argument("--api-key", default=None, help="admin key (default $LOYALTY_API_KEY)")
    parser.add_argument("--tls-ca", type=pathlib.Path, help="PEM roots to trust: connect with TLS")
    parser.add_argument("--tls-cert", type=pathlib.Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", type=pathlib.Path, help="client private key (PEM), for mutual TLS")
    parser.add_argument("--tls-server-name", help="name to check the server certificate against")


def open_channel(options: argparse.Namespace):
    """A blocking gRPC channel to --target: TLS when --tls-ca or --tls-cert is given."""
    import grpc

    if not (options.tls_ca or options.tls_cert):
        return grpc.insecure_channel(options.target)

    def read(path: pathlib.Path | None) -> bytes | None:
        return path.read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(read(options.tls_ca), read(options.tls_key), read(options.tls_cert))
    name = options.tls_server_name
    return grpc.secure_channel(
        options.target, credentials, options=[("grpc.ssl_target_name_override", name)] if name else []
    )


def call_metadata(options: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The bearer key from --api-key or $LOYALTY_API_KEY (none: no metadata)."""
    api_key = options.api_key or os.environ.get("LOYALTY_API_KEY") or ""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


# Waits before the CLI's own retries of a call answered UNAVAILABLE, DEADLINE_EXCEEDED
# or RESOURCE_EXHAUSTED: three retries over about two seconds ride out a gateway's
# Redis blip or an audit write that failed once, and a person at a terminal is not
# kept waiting longer (they can repeat the command by hand with --request-id).
CLI_RETRY_DELAYS_S = (0.25, 0.5, 1.0)

_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


def add_request_id_flag(parser: argparse.ArgumentParser) -> None:
    """--request-id, for the subcommands that change something."""
    parser.add_argument(
        "--request-id",
        default="",
        help="idempotency key of this change (default: a new one per invocation, printed on failure); "
        "repeat a command that failed or timed out with the same --request-id to get its first answer "
        "instead of changing twice",
    )


def request_id(options: argparse.Namespace) -> str:
    """The invocation's request_id: --request-id, or a fresh one (the same for every
    retry of this invocation)."""
    import uuid

    given = getattr(options, "request_id", "") or ""
    if not given:
        options.request_id = f"cli-{uuid.uuid4()}"
    return options.request_id


def _sleep(seconds: float) -> None:
    """How the CLI waits between retries (tests replace it)."""
    import time

    time.sleep(seconds)


def call(method, request, *, metadata, timeout: float):
    """``method(request)`` with the CLI's retries. Safe for reads, and for changes
    because every change the CLIs send carries the invocation's request_id, which the
    server applies at most once (a retry answers the first outcome)."""
    import grpc

    for delay in (*CLI_RETRY_DELAYS_S, None):
        try:
            return method(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            if delay is None or error.code().name not in _RETRYABLE:
                raise
            _sleep(delay)
    raise AssertionError("unreachable")
