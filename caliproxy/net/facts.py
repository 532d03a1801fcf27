"""Facts about a client connection read from its Twisted transport: TLS version and cipher, and
the client certificate (SHA-256 fingerprint, whether it verified against the device CA, expiry).

A TLS listener *requests* a client certificate when the configuration has a device CA or a device
registry, but never requires one: the verify callback installed by
:func:`request_client_certificates` records what OpenSSL concluded about the chain and lets the
handshake go on, so a client with no certificate, or one that does not verify, still connects and
simply earns no device trust. Session resumption is turned off on such contexts because a resumed
handshake skips the verify callback, and a recorded verdict must exist for every certificate.

IO shell: pyOpenSSL and Twisted. The decision itself is ``caliproxy.privacy.trust``'s.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto
from twisted.internet import ssl

from caliproxy.net.tls import _load_certificates


@dataclass
class _Verification:
    """What the verify callback saw for one connection's client certificate chain."""

    ok: bool = True
    leaf_seen: bool = False
    errors: list[tuple[int, int]] = field(default_factory=list)  # (depth, X509_V_ERR_*)

    @property
    def verified(self) -> bool:
        return self.leaf_seen and self.ok


# Keyed by the OpenSSL connection so the record dies with it.
_verifications: weakref.WeakKeyDictionary[SSL.Connection, _Verification] = weakref.WeakKeyDictionary()


def _record_verification(connection: SSL.Connection, _cert: Any, errno: int, depth: int,
                         ok: int) -> bool:
    record = _verifications.get(connection)
    if record is None:
        record = _verifications[connection] = _Verification()
    if not ok:
        record.ok = False
        record.errors.append((depth, errno))
    if depth == 0:
        record.leaf_seen = True
    return True  # never fail the handshake: an unverified certificate only earns no trust


def request_client_certificates(options: ssl.CertificateOptions, ca_file: Path | None) -> None:
    """Make the server ``options`` ask clients for a certificate, verified against ``ca_file``.

    Must run before the options serve their first connection. Without a CA file the request is
    still made (registered devices may be self-signed: they are recognised by fingerprint), and
    no certificate ever counts as chaining to a device CA.
    """
    context = options.getContext()
    if ca_file is not None:
        _load_certificates(ca_file)  # a clear ConfigError for a missing or malformed file
        context.load_verify_locations(str(ca_file))
        # Tell clients which issuers we take, so they offer the right certificate.
        context.load_client_ca(str(ca_file).encode())
    context.set_verify(SSL.VERIFY_PEER, _record_verification)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_options(SSL.OP_NO_TICKET)


@dataclass(frozen=True)
class TLSFacts:
    """The TLS side of a connection, as the handshake left it."""

    version: str | None  # "TLSv1.3" as OpenSSL names it
    cipher: str | None
    cert_fingerprint: str | None  # SHA-256 of the leaf certificate's DER, lower-case hex
    chains_to_device_ca: bool
    cert_not_after: datetime | None


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _connection(transport: Any) -> SSL.Connection | None:
    # The client protocol's transport may be the TLS protocol itself (implicit TLS), a TCP
    # transport that started TLS (STARTTLS), or a PROXY-protocol wrapper around either; each
    # answers getHandle() with the OpenSSL connection once TLS is on.
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    try:
        handle = get_handle()
    except Exception:  # noqa: BLE001  # a transport without TLS may not have a handle at all
        return None
    return handle if isinstance(handle, SSL.Connection) else None


def tls_facts(transport: Any) -> TLSFacts | None:
    """The TLS facts of ``transport`` after its handshake, or None when it is not TLS."""
    connection = _connection(transport)
    if connection is None:
        return None
    certificate = connection.get_peer_certificate(as_cryptography=True)
    fingerprint = not_after = None
    chains = False
    if certificate is not None:
        fingerprint = certificate_fingerprint(certificate)
        not_after = certificate.not_valid_after_utc
        record = _verifications.get(connection)
        chains = record is not None and record.verified
    return TLSFacts(
        version=connection.get_protocol_version_name(),
        cipher=connection.get_cipher_name(),
        cert_fingerprint=fingerprint,
        chains_to_device_ca=chains,
        cert_not_after=not_after,
    )


def verify_certificate_file(certificate_pem: bytes, ca_file: Path | None,
                            at: datetime | None = None) -> tuple[str, datetime, bool]:
    """Fingerprint, expiry and whether a PEM certificate (leaf first, then any intermediates)
    verifies against ``ca_file`` at time ``at`` (default now): what ``caliproxy trust --cert``
    needs to reproduce the handshake's facts offline."""
    blocks = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in _split_pem(certificate_pem)]
    if not blocks:
        raise ValueError("no PEM certificate found")
    leaf = blocks[0].to_cryptography()
    chains = False
    if ca_file is not None:
        store = crypto.X509Store()
        for authority in _load_certificates(ca_file):
            store.add_cert(authority)
        if at is not None:
            store.set_time(at)
        context = crypto.X509StoreContext(store, blocks[0], blocks[1:] or None)
        try:
            context.verify_certificate()
            chains = _usable_by_clients(leaf)
        except crypto.X509StoreContextError:
            chains = False
    return certificate_fingerprint(leaf), leaf.not_valid_after_utc, chains


def _usable_by_clients(certificate: x509.Certificate) -> bool:
    # The handshake verifies for the TLS-client purpose: an extended key usage, when present,
    # must allow clientAuth. The offline store does not check purposes, so this does.
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    parts = []
    for chunk in data.split(marker)[:-1]:
        start = chunk.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            parts.append(chunk[start:] + marker)
    return parts
