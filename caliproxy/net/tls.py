"""TLS contexts for both sides: our certificate toward clients, verified connections upstream.

IO shell (pyOpenSSL through Twisted). Upstream certificates and host names are always verified
unless the configuration says ``tls: none`` for that upstream; the minimum is TLS 1.2 both ways.
"""

from __future__ import annotations

import re
from pathlib import Path

from OpenSSL import crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLContextFactory
from zope.interface import implementer

from caliproxy.errors import ConfigError

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _load_certificates(path: Path) -> list[crypto.X509]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read certificate: {exc.strerror}") from None
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ConfigError(f"{path}: no PEM certificate found")
    try:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]
    except crypto.Error as exc:
        raise ConfigError(f"{path}: invalid certificate: {exc}") from None


def server_options(certificate: Path, key: Path) -> ssl.CertificateOptions:
    """Options for accepting TLS from clients with our certificate chain (leaf first) and key."""
    chain = _load_certificates(certificate)
    try:
        private_key = crypto.load_privatekey(crypto.FILETYPE_PEM, key.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read key: {exc.strerror}") from None
    except crypto.Error as exc:
        raise ConfigError(f"{key}: invalid private key: {exc}") from None
    # pyca/cryptography objects: pyOpenSSL deprecated taking its own X509 and PKey here (24.3)
    # on its way to removing them; Twisted hands these straight to the context.
    options = ssl.CertificateOptions(
        privateKey=private_key.to_cryptography_key(),
        certificate=chain[0].to_cryptography(),
        extraCertChain=[extra.to_cryptography() for extra in chain[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:
        context = options.getContext()
        context.check_privatekey()
    except Exception as exc:  # noqa: BLE001  # pyOpenSSL raises its own Error types
        raise ConfigError(f"{key}: does not match the certificate {certificate}: {exc}") from None
    return options


@implementer(IOpenSSLContextFactory)
class ReloadableServerOptions:
    """Server TLS options whose certificate can be replaced while listeners keep running.

    Twisted asks for a context at every handshake (``getContext``), so after ``replace`` new
    handshakes use the new certificate and existing connections are untouched."""

    def __init__(self, options: ssl.CertificateOptions | None) -> None:
        self._options = options

    def replace(self, options: ssl.CertificateOptions) -> None:
        self._options = options

    def getContext(self) -> object:  # Twisted's interface name
        if self._options is None:
            raise ConfigError("no TLS certificate is configured")
        return self._options.getContext()


def client_options(server_name: str, ca_file: Path | None) -> IOpenSSLClientConnectionCreator:
    """Options for connecting to an upstream, verifying its certificate and ``server_name``."""
    if ca_file is None:
        trust = ssl.platformTrust()
    else:
        certs = [ssl.Certificate(cert) for cert in _load_certificates(ca_file)]
        trust = ssl.trustRootFromCertificates(certs)
    return ssl.optionsForClientTLS(
        server_name, trustRoot=trust, extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    )


def peer_matches(transport: object, server_name: str) -> str | None:
    """Check the upstream's certificate names ``server_name``; None when it does.

    Twisted verifies the name during the handshake, but when a certificate's names cannot even be
    parsed its callback logs the error and lets the handshake succeed. This second check after
    the handshake fails closed on anything unexpected.
    """
    get_certificate = getattr(transport, "getPeerCertificate", None)
    certificate = get_certificate() if get_certificate is not None else None
    if certificate is None:
        return "upstream presented no certificate"
    try:
        cert = certificate.to_cryptography()
        if _is_ip(server_name):
            verify_certificate_ip_address(cert, server_name)
        else:
            verify_certificate_hostname(cert, server_name)
    except (VerificationError, CertificateError, ValueError) as exc:
        return f"upstream certificate does not match {server_name}: {type(exc).__name__}"
    return None


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
