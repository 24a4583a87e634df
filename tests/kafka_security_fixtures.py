"""Kafka behind TLS and SASL, for real: a test CA and certificates made at test time, Debian's
stunnel4 terminating TLS (mutual TLS too), and the SASL proxy of ``services.sasl_proxy``, each in
front of its own Tansu broker whose advertised listener is the proxy's port."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from xclip_stream.services.sasl_proxy import SaslProxy
from xclip_stream.services.stunnel import TlsTerminator, stunnel_binary
from xclip_stream.services.tansu import TansuBroker, free_port

USERS = {"alice": "correct horse battery staple", "bob": "s3cret=,with\u00e9"}
KEY_PASSWORD = "client-key-pass"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # signs the server and the client certificates
    other_ca: Path  # trusted by nobody here: the "wrong CA"
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD
    key_password_file: Path
    stranger_cert: Path  # a client certificate signed by other_ca
    stranger_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_name, issuer_key, ca: bool = False, server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(folder: Path, stem: str, cert, key, password: str | None = None) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    crypt = (serialization.BestAvailableEncryption(password.encode()) if password
             else serialization.NoEncryption())
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, other_key = _key(), _key()
    ca = _cert("xclip test CA", ca_key, None, None, ca=True)
    other = _cert("some other CA", other_key, None, None, ca=True)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    other_path, _ = _write(folder, "other-ca", other, other_key)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _write(folder, "server", _cert("localhost", server_key, ca.subject, ca_key, server=True), server_key)
    client = _write(folder, "client", _cert("xclip-client", client_key, ca.subject, ca_key), client_key,
                    password=KEY_PASSWORD)
    stranger = _write(folder, "stranger", _cert("stranger", stranger_key, other.subject, other_key), stranger_key)
    password_file = folder / "key-password"
    password_file.write_text(KEY_PASSWORD + "\n")
    return TlsFiles(ca_path, other_path, *server, *client, password_file, *stranger)


@pytest.fixture(scope="session")
def user_password_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sasl")
    files = {}
    for user, password in USERS.items():
        files[user] = folder / f"{user}.password"
        files[user].write_text(password + "\n", encoding="utf-8")
        files[user].chmod(0o600)
    return files


def _need_stunnel() -> None:
    try:
        stunnel_binary()
    except FileNotFoundError as e:
        pytest.fail(f"TLS tests need stunnel: {e}")


@pytest.fixture(scope="session")
def tls_bootstrap(tls_files: TlsFiles) -> Iterator[str]:
    """Kafka over TLS: stunnel (server certificate from the test CA) in front of a Tansu broker."""
    _need_stunnel()
    port = free_port()
    with TansuBroker(advertised=f"127.0.0.1:{port}") as broker, \
            TlsTerminator(broker.bootstrap, tls_files.server_cert, tls_files.server_key, port=port) as tls:
        yield tls.bootstrap


@pytest.fixture(scope="session")
def mtls_bootstrap(tls_files: TlsFiles) -> Iterator[str]:
    """Kafka over mutual TLS: stunnel demands a client certificate signed by the test CA."""
    _need_stunnel()
    port = free_port()
    with TansuBroker(advertised=f"127.0.0.1:{port}") as broker, \
            TlsTerminator(broker.bootstrap, tls_files.server_cert, tls_files.server_key, port=port,
                          client_ca=tls_files.ca) as tls:
        yield tls.bootstrap


@pytest.fixture(scope="session")
def sasl_proxy() -> Iterator[SaslProxy]:
    """Kafka with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) over plaintext, users ``USERS``."""
    port = free_port()
    with TansuBroker(advertised=f"127.0.0.1:{port}") as broker, SaslProxy(broker.bootstrap, USERS, port=port) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def sasl_ssl_bootstrap(tls_files: TlsFiles) -> Iterator[str]:
    """SASL over TLS: stunnel -> SASL proxy -> Tansu."""
    _need_stunnel()
    port = free_port()
    with TansuBroker(advertised=f"127.0.0.1:{port}") as broker, SaslProxy(broker.bootstrap, USERS) as proxy, \
            TlsTerminator(proxy.bootstrap, tls_files.server_cert, tls_files.server_key, port=port) as tls:
        yield tls.bootstrap
