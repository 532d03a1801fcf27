"""Connection trust for real: the caliproxy process in front of Dovecot, TLS handshakes with and
without client certificates (trustme), clients bound to 127.0.0.1 or 127.0.0.2, and PROXY
protocol v1/v2 headers. Each session's clearance is read back from its audit log line."""

from __future__ import annotations

import base64
import itertools
import json
import re
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from caliproxy.demo.dovecot import free_port
from tests.fixtures.proxy import ProxyProcess
from tests.fixtures.upstreams import ServerCertFiles
from tests.trust.conftest import ClientCert, DeviceCerts, ModuleProxy
from tests.trust.test_clearance import shown

pytestmark = pytest.mark.integration

OTHER_LOOPBACK = "127.0.0.2"
AUDIT = re.compile(
    r"caliproxy\.audit: clearance level=(?P<level>\S+) listener=(?P<listener>\S+) "
    r"client=(?P<client>\S+) port=(?P<port>\d+) account=(?P<account>\S+) rule=(?P<rule>\S+) "
    r"reasons=(?P<reasons>\[.*\])$",
    re.MULTILINE,
)


# Client ports declared in PROXY headers: below the kernel's ephemeral range, so no real session
# of this module has the same port in its audit line.
DECLARED_PORTS = itertools.count(10001)
TLS_MODES = {"imaps": "implicit", "imap": "starttls", "lb": "implicit", "lb-starttls": "starttls"}


@pytest.fixture(scope="module")
def trusted_proxy(module_proxy: ModuleProxy, server_cert_files: ServerCertFiles,
                  device_certs: DeviceCerts) -> ProxyProcess:
    """One caliproxy with trust rules for every case, shared by this module's tests."""
    listeners: list[dict[str, Any]] = [
        {"name": name, "port": free_port(), "tls": mode} for name, mode in TLS_MODES.items()
    ]
    listeners[2]["proxy_protocol"] = True  # allowed balancers: the top-level list
    listeners[3].update(proxy_protocol=True, proxy_protocol_from=["127.0.0.1/32", "::1"])
    certs = device_certs
    extra = {
        "tls": {"certificate": str(server_cert_files.cert_pem), "key": str(server_cert_files.key_pem),
                "client_ca": str(certs.ca_pem)},
        "proxy_protocol_from": ["127.0.0.1/32"],
        "devices": [
            {"name": "laptop", "fingerprint": certs.laptop.fingerprint},
            {"name": "old-phone", "fingerprint": certs.expired.fingerprint},
            {"name": "stolen", "fingerprint": certs.revoked.fingerprint, "revoked": True},
            {"name": "pinned", "fingerprint": ":".join(
                certs.pinned.fingerprint[i:i + 2].upper() for i in range(0, 64, 2))},
        ],
        "trust": {
            "rules": [
                {"name": "devices", "level": "secret",
                 "match": {"device": ["laptop", "old-phone", "stolen", "pinned"], "tls_min": "1.3"}},
                {"name": "device-ca", "level": "confidential", "match": {"device_ca": True}},
                {"name": "balanced-v6", "level": "confidential",
                 "match": {"listener": ["lb", "lb-starttls"], "network": ["2001:db8::/32"]}},
                {"name": "balanced", "level": "internal",
                 "match": {"listener": ["lb", "lb-starttls"], "network": ["203.0.113.0/24"]}},
                {"name": "loopback-one", "level": "internal", "match": {"network": ["127.0.0.1/32"]}},
            ],
            "client_id": [{"name": "webmail", "level": "public", "match": {"name": "*webmail*"}}],
        },
    }
    return module_proxy(listeners, extra)


# -- a minimal IMAP client that controls its source address, certificate and PROXY header -------


def _read_until(sock: Any, tag: bytes) -> bytes:
    data = b""
    while not any(line.startswith(tag + b" ") for line in data.split(b"\r\n")):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {tag!r}: {data!r}")
        data += chunk
    return data


def _context(ca_pem: Path, cert: ClientCert | None, tls12: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_pem))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(str(cert.pem))
    return context


def session(proxy: ProxyProcess, listener: str, *, source: str = "127.0.0.1",
            cert: ClientCert | None = None, header: bytes = b"", tls12: bool = False,
            client_id: bytes = b"", sasl_plain: bool = False) -> int:
    """Log in as alice on ``listener`` and log out; return the TCP source port used."""
    plain = socket.create_connection(("127.0.0.1", proxy.ports[listener]), timeout=10,
                                     source_address=(source, 0))
    port = plain.getsockname()[1]
    context = _context(proxy.ca_pem, cert, tls12)
    try:
        if header:
            plain.sendall(header)
        if TLS_MODES[listener] == "starttls":
            _read_until(plain, b"*")
            plain.sendall(b"s STARTTLS\r\n")
            _read_until(plain, b"s")
            sock: Any = context.wrap_socket(plain, server_hostname="localhost")
        else:
            sock = context.wrap_socket(plain, server_hostname="localhost")
            _read_until(sock, b"*")
        if client_id:
            sock.sendall(b"i ID " + client_id + b"\r\n")
            assert b"i OK" in _read_until(sock, b"i")
        if sasl_plain:
            sock.sendall(b"a AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0alicepw") + b"\r\n")
        else:
            sock.sendall(b"a LOGIN alice alicepw\r\n")
        assert b"a OK" in _read_until(sock, b"a")
        sock.sendall(b"b NOOP\r\n")
        assert b"b OK" in _read_until(sock, b"b")
        sock.sendall(b"c LOGOUT\r\n")
        _read_until(sock, b"c")
        sock.close()
    finally:
        plain.close()
    return port


def audit(proxy: ProxyProcess, port: int) -> dict[str, Any]:
    """The audit line of the session whose client port was ``port``."""
    deadline = time.monotonic() + 5
    while True:
        # the newest line for that port: the module's proxy sees ephemeral ports come round again
        for found in reversed(list(AUDIT.finditer(proxy.log()))):
            if int(found["port"]) == port:
                line = found.groupdict()
                line["reasons"] = json.loads(line["reasons"])
                line["account"] = json.loads(line["account"])
                line["rule"] = json.loads(line["rule"])
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit line for port {port}:\n{proxy.log()[-3000:]}")
        time.sleep(0.05)


# -- client certificates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "level", "rule", "says"),
    [
        (None, "public", None, "no client certificate"),
        ("laptop", "secret", "devices", "is registered device 'laptop'"),
        ("unregistered", "confidential", "device-ca", "the certificate chains to the device CA"),
        ("expired", "public", None, "not a device"),
        ("revoked", "public", None, "which is revoked: treated as unknown"),
        ("foreign", "public", None, "the certificate does not chain to the device CA"),
        ("pinned", "secret", "devices", "is registered device 'pinned'"),
    ],
)
def test_client_certificate_on_implicit_tls(trusted_proxy: ProxyProcess, device_certs: DeviceCerts,
                                            which: str | None, level: str, rule: str | None,
                                            says: str) -> None:
    """A certificate is requested, never required: every client logs in, and only a registered
    device in good standing or a valid certificate from the device CA earns more than the
    lowest level (connecting from 127.0.0.2, which no network rule trusts)."""
    cert = getattr(device_certs, which) if which else None
    port = session(trusted_proxy, "imaps", source=OTHER_LOOPBACK, cert=cert)
    line = audit(trusted_proxy, port)
    assert (line["level"], line["rule"], line["listener"]) == (level, rule, "imaps")
    assert line["client"] == OTHER_LOOPBACK and line["account"] == "alice"
    assert any(says in reason for reason in line["reasons"]), line["reasons"]
    assert line["reasons"][0].startswith(f"listener 'imaps', client {OTHER_LOOPBACK}, TLS 1.")
    if cert is not None:
        assert any(shown(cert.fingerprint) in reason for reason in line["reasons"])
    assert "alicepw" not in trusted_proxy.log()


def test_tls_minimum_version_is_the_negotiated_one(trusted_proxy: ProxyProcess,
                                                   device_certs: DeviceCerts) -> None:
    """The laptop over TLS 1.2 misses the TLS 1.3 device rule and falls to the device-CA rule."""
    port = session(trusted_proxy, "imaps", source=OTHER_LOOPBACK, cert=device_certs.laptop, tls12=True)
    line = audit(trusted_proxy, port)
    assert (line["level"], line["rule"]) == ("confidential", "device-ca")
    assert "rule 'devices' does not apply: TLS 1.2 is below 1.3" in line["reasons"]
    assert line["reasons"][0].startswith(f"listener 'imaps', client {OTHER_LOOPBACK}, TLS 1.2 (")


def test_a_declared_client_id_only_lowers(trusted_proxy: ProxyProcess,
                                          device_certs: DeviceCerts) -> None:
    """The laptop that calls itself a webmail before logging in gets the lowest level; the
    SASL mechanism it used is a fact in the reasons."""
    port = session(trusted_proxy, "imaps", source=OTHER_LOOPBACK, cert=device_certs.laptop,
                   client_id=b'("name" "Test Webmail" "version" "1")', sasl_plain=True)
    line = audit(trusted_proxy, port)
    assert (line["level"], line["rule"]) == ("public", "devices")
    assert "account 'alice' (PLAIN)" in line["reasons"]
    assert "client-ID rule 'webmail' matched (name='Test Webmail'): lowered from secret to public" \
        in line["reasons"]
    port = session(trusted_proxy, "imaps", source=OTHER_LOOPBACK, cert=device_certs.laptop,
                   client_id=b'("name" "Thunderbird")')
    assert audit(trusted_proxy, port)["level"] == "secret"


def test_device_certificate_after_starttls(trusted_proxy: ProxyProcess, device_certs: DeviceCerts) -> None:
    """STARTTLS requests the certificate too; the facts are those of the upgraded connection."""
    port = session(trusted_proxy, "imap", source=OTHER_LOOPBACK, cert=device_certs.laptop)
    line = audit(trusted_proxy, port)
    assert (line["level"], line["rule"], line["listener"]) == ("secret", "devices", "imap")
    assert line["reasons"][0].startswith(f"listener 'imap', client {OTHER_LOOPBACK}, TLS 1.3")


# -- source networks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "level", "rule"),
                         [("127.0.0.1", "internal", "loopback-one"), (OTHER_LOOPBACK, "public", None)])
@pytest.mark.parametrize("listener", ["imaps", "imap"])
def test_source_network_decides_without_certificate(trusted_proxy: ProxyProcess, listener: str,
                                                    source: str, level: str, rule: str | None) -> None:
    port = session(trusted_proxy, listener, source=source)
    line = audit(trusted_proxy, port)
    assert (line["client"], line["level"], line["rule"]) == (source, level, rule)
    if rule is None:
        assert f"rule 'loopback-one' does not apply: client address {source} is not in 127.0.0.1/32" \
            in line["reasons"]


# -- PROXY protocol ---------------------------------------------------------------------------------


def proxy_v1(source: str, port: int) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    destination = "::1" if ":" in source else "127.0.0.1"
    return f"PROXY {family} {source} {destination} {port} 993\r\n".encode()


def proxy_v2(source: str, port: int) -> bytes:
    import ipaddress

    ip = ipaddress.ip_address(source)
    if ip.version == 4:
        body = ip.packed + ipaddress.ip_address("127.0.0.1").packed + struct.pack("!HH", port, 993)
        family = 0x11
    else:
        body = ip.packed + ipaddress.ip_address("::1").packed + struct.pack("!HH", port, 993)
        family = 0x21
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV, to be skipped
    body += tlv
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(
    ("make", "listener", "source", "level", "rule"),
    [
        (proxy_v1, "lb", "203.0.113.7", "internal", "balanced"),
        (proxy_v2, "lb", "203.0.113.8", "internal", "balanced"),
        (proxy_v1, "lb", "2001:db8::7", "confidential", "balanced-v6"),
        (proxy_v2, "lb", "2001:db8::8", "confidential", "balanced-v6"),
        (proxy_v1, "lb-starttls", "203.0.113.9", "internal", "balanced"),
        (proxy_v2, "lb-starttls", "198.51.100.1", "public", None),
    ],
)
def test_proxy_header_from_an_allowed_balancer_sets_the_client_address(
        trusted_proxy: ProxyProcess, make: Any, listener: str, source: str, level: str,
        rule: str | None) -> None:
    """The header's address is what the rules see (the balancer itself is 127.0.0.1, which a
    rule trusts: the header's address must win)."""
    declared_port = next(DECLARED_PORTS)
    session(trusted_proxy, listener, header=make(source, declared_port))
    line = audit(trusted_proxy, declared_port)
    assert (line["client"], line["level"], line["rule"], line["listener"]) == (source, level, rule, listener)


def test_device_certificate_through_balancer_and_starttls(trusted_proxy: ProxyProcess,
                                                          device_certs: DeviceCerts) -> None:
    session(trusted_proxy, "lb-starttls", cert=device_certs.laptop,
            header=proxy_v2("203.0.113.10", 10000))
    line = audit(trusted_proxy, 10000)
    assert (line["client"], line["level"], line["rule"]) == ("203.0.113.10", "secret", "devices")


def _refused(proxy: ProxyProcess, listener: str, source: str, payload: bytes) -> bytes:
    try:
        sock = socket.create_connection(("127.0.0.1", proxy.ports[listener]), timeout=10,
                                        source_address=(source, 0))
    except ConnectionResetError:
        return b""  # accepted and reset so quickly that connect() already saw it
    try:
        try:
            sock.sendall(payload)
        except OSError:
            return b""
        received = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
    finally:
        sock.close()


@pytest.mark.parametrize("make", [proxy_v1, proxy_v2])
@pytest.mark.parametrize("listener", ["lb", "lb-starttls"])
def test_proxy_header_from_anyone_else_is_refused(trusted_proxy: ProxyProcess, make: Any,
                                                  listener: str) -> None:
    """127.0.0.2 is not an allowed balancer: its connection is closed before anything is read,
    so it cannot claim a trusted address."""
    received = _refused(trusted_proxy, listener, OTHER_LOOPBACK, make("203.0.113.7", 40000))
    assert received == b""
    assert f"PROXY protocol listener {listener}: connection from {OTHER_LOOPBACK} refused" \
        in trusted_proxy.log()


@pytest.mark.parametrize("payload", [b"a LOGIN alice alicepw\r\n", b"PROXY TCP4 1.2.3.4\r\n",
                                     b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd"])
def test_missing_or_malformed_header_is_refused(trusted_proxy: ProxyProcess, payload: bytes) -> None:
    assert _refused(trusted_proxy, "lb-starttls", "127.0.0.1", payload) == b""
