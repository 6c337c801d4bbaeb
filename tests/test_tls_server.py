"""TLS and mutual TLS, with certificates made here: plaintext is refused when TLS is
on, and a client certificate from another CA is refused when client certificates are
required. The Python SDK connects with the right ones (and an API key)."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import uuid

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loyalty.clients import ClientConfig, LoyaltyClient, MemberNotFound, TlsConfig
from loyalty.server.cli import main as cli
from loyalty.server.security.config import SecuritySettings, TlsFiles
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc


def _pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Authority:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _pem(self.certificate)

    def issue(self, common_name: str, *, server: bool) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return _pem(builder.sign(self.key, hashes.SHA256())), _key_pem(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Files: a CA, a server certificate it issued, a client certificate it issued,
    and a client certificate from another CA."""
    directory = tmp_path_factory.mktemp("pki")
    ours, theirs = Authority("loyalty test CA"), Authority("some other CA")
    files = {"ca": ours.pem}
    files["server_cert"], files["server_key"] = ours.issue("localhost", server=True)
    files["client_cert"], files["client_key"] = ours.issue("till-1", server=False)
    files["stranger_cert"], files["stranger_key"] = theirs.issue("till-1", server=False)
    paths = {}
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return paths


def _server(redis_server, pki, *, client_ca: bool):
    from conftest import SecuredServer

    tls = TlsFiles(
        cert_file=str(pki["server_cert"]),
        key_file=str(pki["server_key"]),
        client_ca_file=str(pki["ca"]) if client_ca else "",
    )
    return SecuredServer(redis_server.url, security=SecuritySettings(tls=tls))


@pytest.fixture(scope="module")
def mtls_server(ray_session, redis_server, pki):
    running = _server(redis_server, pki, client_ca=True)
    yield running
    running.stop()


def _answer(channel, metadata=()) -> grpc.StatusCode:
    stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
    try:
        stub.GetBalance(pb.GetBalanceRequest(member_id="nobody"), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _tls_channel(target: str, pki, *, cert: str | None = None, key: str | None = None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].read_bytes(),
        private_key=pki[key].read_bytes() if key else None,
        certificate_chain=pki[cert].read_bytes() if cert else None,
    )
    return grpc.secure_channel(target, credentials)


def test_mutual_tls_admits_only_clients_with_a_certificate_from_its_ca(mtls_server, pki):
    admin = mtls_server.metadata(mtls_server.secrets["admin"])
    with grpc.insecure_channel(mtls_server.target) as plaintext:
        assert _answer(plaintext, admin) == grpc.StatusCode.UNAVAILABLE
    with _tls_channel(mtls_server.target, pki) as no_certificate:
        assert _answer(no_certificate, admin) == grpc.StatusCode.UNAVAILABLE
    with _tls_channel(mtls_server.target, pki, cert="stranger_cert", key="stranger_key") as stranger:
        assert _answer(stranger, admin) == grpc.StatusCode.UNAVAILABLE
    with _tls_channel(mtls_server.target, pki, cert="client_cert", key="client_key") as good:
        # Through TLS, the API key still decides: none is UNAUTHENTICATED, a key works.
        assert _answer(good) == grpc.StatusCode.UNAUTHENTICATED
        assert _answer(good, admin) == grpc.StatusCode.NOT_FOUND  # nobody: served


def test_the_sdk_connects_with_mutual_tls_and_an_api_key(mtls_server, pki):
    config = ClientConfig(
        target=mtls_server.target,
        api_key=mtls_server.secrets["pos"],
        tls=TlsConfig.from_files(
            pki["ca"], pki["client_cert"], pki["client_key"], server_name_override="localhost"
        ),
    )
    member_id = f"m-{uuid.uuid4().hex[:8]}"
    with LoyaltyClient(config) as client:
        with pytest.raises(MemberNotFound):
            client.get_balance(member_id)
        client.enroll_member(member_id)
        assert client.get_balance(member_id).available == 0


def test_tls_without_client_certificates_refuses_plaintext(ray_session, redis_server, pki):
    running = _server(redis_server, pki, client_ca=False)
    try:
        admin = running.metadata(running.secrets["admin"])
        with grpc.insecure_channel(running.target) as plaintext:
            assert _answer(plaintext, admin) == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(running.target, pki) as channel:
            assert _answer(channel, admin) == grpc.StatusCode.NOT_FOUND
        assert "TLS" in running.thread.server.security.describe()
    finally:
        running.stop()


def test_an_extra_gateway_process_serves_the_same_tls(mtls_server, pki):
    server = mtls_server.thread.server
    worker = subprocess.Popen(
        server.worker_command(port=0),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = worker.stdout.readline()
        assert "ready on" in line, line
        target = f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"
        admin = mtls_server.metadata(mtls_server.secrets["admin"])
        with grpc.insecure_channel(target) as plaintext:
            assert _answer(plaintext, admin) == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(target, pki, cert="stranger_cert", key="stranger_key") as stranger:
            assert _answer(stranger, admin) == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(target, pki, cert="client_cert", key="client_key") as good:
            assert _answer(good) == grpc.StatusCode.UNAUTHENTICATED
            assert _answer(good, admin) == grpc.StatusCode.NOT_FOUND
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_serve_checks_the_tls_flags(pki, capsys):
    assert cli.main(["serve", "--tls-cert", str(pki["server_cert"])]) == 2
    assert "--tls-key" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "serve",
                "--tls-cert",
                str(pki["server_cert"]),
                "--tls-key",
                str(pki["ca"].parent / "missing.pem"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
