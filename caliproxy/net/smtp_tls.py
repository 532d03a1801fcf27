"""TLS toward SMTP clients: a standard-library ``ssl.SSLContext`` with our certificate.

IO shell. aiosmtpd runs its STARTTLS (and ``loop.create_server`` its implicit TLS) through asyncio's
own TLS layer, which takes only ``ssl.SSLContext``; the IMAP side's pyOpenSSL options cannot be used
there. The same certificate and key files, and the same minimum (TLS 1.2), apply to both.
Upstream connections keep using ``caliproxy.net.tls.client_options`` (pyOpenSSL, verified).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from caliproxy.errors import ConfigError


def server_ssl_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting ``certificate`` (leaf first, then its chain) with ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # clients are not asked for certificates here; device certificates are an IMAP-side policy
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(str(certificate), str(key))
    except OSError as exc:
        raise ConfigError(f"{certificate}: cannot read certificate or key: {exc.strerror}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"{key}: unusable certificate or key ({certificate}): {exc.reason}") from None
    return context
