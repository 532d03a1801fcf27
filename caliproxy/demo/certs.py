"""Demo TLS material: a private CA and a server certificate for localhost / 127.0.0.1.

Owns: generating and writing PEM files with the ``cryptography`` package (already required by
pyOpenSSL, so no new dependency). The demo uses them for the upstream Dovecot and for the proxy's
own listeners; a mail client is told to trust ``ca.pem``. Tests use trustme instead.

The server certificate names ``DNS:localhost`` and ``IP:127.0.0.1``. Clients should connect to
``localhost``: mbsync 1.4 compares only DNS names, and a ``DNS:127.0.0.1`` entry (which would
please it) is invalid to RFC 6125 checkers and makes caliproxy refuse the certificate.

Must not import the proxy rings nor test-only packages.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1")

# RSA rather than ECDSA: every client the demo drives (mbsync, msmtp, neomutt, Thunderbird)
# accepts it, and generating two keys once is cheap enough.
_KEY_BITS = 2048
_CA_DAYS = 3650
# 825 days is the longest lifetime Apple platforms accept for a server certificate
_SERVER_DAYS = 825
# regenerate a kept certificate this long before it expires
_RENEW_MARGIN = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertFiles:
    """Paths of the PEM files written by :func:`write_demo_certs`."""

    ca_cert: Path
    """The CA certificate: what clients trust."""
    ca_key: Path
    server_cert: Path
    """Server certificate followed by the CA certificate (the chain a server sends)."""
    server_key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def generate_ca(
    common_name: str = "caliproxy demo CA",
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed CA certificate and its key, allowed to sign server certificates only."""
    key = _new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "caliproxy demo"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # a day of slack for clocks that run behind
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    """An IP entry for every name that is an address, a DNS entry for every other name.

    (A DNS entry spelling an address is invalid to RFC 6125 checkers such as service_identity,
    which reject the whole certificate; clients connect to ``localhost``.)"""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    names: Sequence[str] = DEFAULT_NAMES,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A TLS server certificate for ``names`` signed by the CA; the first name is the CN."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    key = _new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # strict verifiers (Python 3.13's VERIFY_X509_STRICT) require the authority key id
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` with ``mode`` from the first byte on: a key is never world-readable."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _reusable(files: CertFiles, names: Sequence[str]) -> bool:
    """True when earlier files exist, chain to their CA, cover ``names`` and are not near expiry."""
    try:
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
        server.verify_directly_issued_by(ca)
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if set(_san(names)) != set(san):
        return False
    deadline = _now() + _RENEW_MARGIN
    return min(ca.not_valid_after_utc, server.not_valid_after_utc) > deadline


def write_demo_certs(directory: Path, names: Sequence[str] = DEFAULT_NAMES) -> CertFiles:
    """Write ``ca.pem``, ``ca-key.pem``, ``server.pem`` and ``server-key.pem`` into ``directory``.

    Files from an earlier run are kept while they are still valid for ``names``, so a client that
    was told to trust the demo CA keeps trusting it across demo restarts. Keys are mode 0600.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    if _reusable(files, names):
        return files
    ca, ca_key = generate_ca()
    server, server_key = issue_server_cert(ca, ca_key, names)
    _write(files.ca_key, key_pem(ca_key), 0o600)
    _write(files.server_key, key_pem(server_key), 0o600)
    _write(files.ca_cert, cert_pem(ca), 0o644)
    # leaf first, then its issuer: servers send the whole file as their chain
    _write(files.server_cert, cert_pem(server) + cert_pem(ca), 0o644)
    return files
