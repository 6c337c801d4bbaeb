"""How a client reaches the server: target, credentials, TLS, deadlines, retries."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import grpc

from loyalty.clients.retry import RetryPolicy

DEFAULT_TARGET = "127.0.0.1:50051"

# Seconds one attempt may take unless the call says otherwise. A unary call takes
# milliseconds; a full 10,000-item Batch a second or two on a busy server.
DEFAULT_TIMEOUT_SECONDS = 10.0

# The server accepts messages up to 16 MiB (a full Batch); the client must accept
# responses as large, or a big Batch would fail after being applied.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel; with a client certificate and key, mutual TLS."""

    root_certificates: bytes | None = None
    """PEM roots to trust; None: the system's default roots."""
    certificate_chain: bytes | None = None
    """PEM client certificate chain, for mutual TLS."""
    private_key: bytes | None = None
    """PEM private key of the client certificate, for mutual TLS."""
    server_name_override: str | None = None
    """Host name to verify the server certificate against, when it differs from the
    target's (for example a test certificate issued for "localhost")."""

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("mutual TLS needs both certificate_chain and private_key")

    @classmethod
    def from_files(
        cls,
        root_certificates: str | os.PathLike | None = None,
        certificate_chain: str | os.PathLike | None = None,
        private_key: str | os.PathLike | None = None,
        *,
        server_name_override: str | None = None,
    ) -> TlsConfig:
        """A TlsConfig from PEM files (any may be None)."""

        def read(path):
            return None if path is None else pathlib.Path(path).read_bytes()

        return cls(read(root_certificates), read(certificate_chain), read(private_key), server_name_override)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The grpc credentials these settings describe."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs to reach the server."""

    target: str = DEFAULT_TARGET
    """host:port of the server (any gRPC target string)."""
    api_key: str | None = None
    """Sent as ``authorization: Bearer <key>`` metadata on every call. Use TLS when
    the server is not on loopback, or the key travels in the clear."""
    tls: TlsConfig | None = None
    """TLS settings; None: a plaintext channel."""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    """Seconds each attempt may take, unless a call passes ``timeout=``."""
    retry: RetryPolicy = RetryPolicy()
    """When and how failed calls are retried."""
    channel_options: tuple[tuple[str, object], ...] = ()
    """Extra gRPC channel options (added after the SDK's own)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> ClientConfig:
        """A config from the environment: LOYALTY_TARGET, LOYALTY_API_KEY,
        LOYALTY_TIMEOUT_SECONDS, and TLS with LOYALTY_TLS=1 (system roots) or
        LOYALTY_TLS_ROOT_CERTIFICATES / LOYALTY_TLS_CERTIFICATE_CHAIN /
        LOYALTY_TLS_PRIVATE_KEY (PEM file paths). Keyword arguments override."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if environ.get("LOYALTY_TARGET"):
            values["target"] = environ["LOYALTY_TARGET"]
        if environ.get("LOYALTY_API_KEY"):
            values["api_key"] = environ["LOYALTY_API_KEY"]
        if environ.get("LOYALTY_TIMEOUT_SECONDS"):
            values["timeout"] = float(environ["LOYALTY_TIMEOUT_SECONDS"])
        files = [environ.get(f"LOYALTY_TLS_{name}") or None for name in ("ROOT_CERTIFICATES", "CERTIFICATE_CHAIN", "PRIVATE_KEY")]
        if any(files) or environ.get("LOYALTY_TLS", "").lower() in {"1", "true", "yes"}:
            values["tls"] = TlsConfig.from_files(*files)
        values.update(overrides)
        return cls(**values)

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call."""
        if not self.api_key:
            return ()
        return (("authorization", f"Bearer {self.api_key}"),)

    def options(self) -> list[tuple[str, object]]:
        """The channel options: message limits, TLS name override, then the caller's."""
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
        ]
        if self.tls is not None and self.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name_override))
        options.extend(self.channel_options)
        return options
