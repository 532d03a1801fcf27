"""Fixtures for the trust tests: device certificates from trustme, and one Dovecot with one
caliproxy in front, started once per module (the trust cases are many and each one is a single
login, so they share a process and are told apart by their port in the audit log)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from caliproxy.demo.dovecot import DovecotServer, dovecot_binary
from tests.fixtures.proxy import ProxyProcess, _wait_listening
from tests.fixtures.upstreams import DEFAULT_USERS, ServerCertFiles


@dataclass(frozen=True)
class ClientCert:
    """A client certificate: key and chain in one PEM file, and the leaf's SHA-256 fingerprint."""

    pem: Path
    fingerprint: str


@dataclass(frozen=True)
class DeviceCerts:
    ca_pem: Path  # the device CA (tls.client_ca)
    laptop: ClientCert  # from the device CA, registered
    unregistered: ClientCert  # from the device CA, not registered
    expired: ClientCert  # from the device CA, registered, the certificate itself expired
    revoked: ClientCert  # from the device CA, registered and revoked
    foreign: ClientCert  # from another CA, not registered
    pinned: ClientCert  # from another CA, registered by fingerprint


def _client_cert(ca: trustme.CA, directory: Path, name: str, **dates: datetime) -> ClientCert:
    leaf = ca.issue_cert(f"{name}.devices.example", **dates)  # type: ignore[arg-type]
    path = directory / f"{name}.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    return ClientCert(path, certificate.fingerprint(hashes.SHA256()).hex())


@pytest.fixture(scope="session")
def device_certs(tmp_path_factory: pytest.TempPathFactory) -> DeviceCerts:
    directory = tmp_path_factory.mktemp("devices")
    device_ca, other_ca = trustme.CA(), trustme.CA()
    ca_pem = directory / "device-ca.pem"
    device_ca.cert_pem.write_to_path(str(ca_pem))
    now = datetime.now(UTC)
    return DeviceCerts(
        ca_pem=ca_pem,
        laptop=_client_cert(device_ca, directory, "laptop"),
        unregistered=_client_cert(device_ca, directory, "tablet"),
        expired=_client_cert(device_ca, directory, "old-phone", not_before=now - timedelta(days=30),
                             not_after=now - timedelta(days=1)),
        revoked=_client_cert(device_ca, directory, "stolen"),
        foreign=_client_cert(other_ca, directory, "foreign"),
        pinned=_client_cert(other_ca, directory, "pinned"),
    )


@pytest.fixture(scope="module")
def module_dovecot(server_cert_files: ServerCertFiles,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """One Dovecot (users alice and bob) for a whole test module."""
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd; see .ci/install-deps)")
    server = DovecotServer(tmp_path_factory.mktemp("dovecot"), DEFAULT_USERS,
                           server_cert_files.cert_pem, server_cert_files.key_pem)
    server.start()
    yield server
    server.cleanup(keep_logs=True)


ModuleProxy = Callable[..., ProxyProcess]


@pytest.fixture(scope="module")
def module_proxy(module_dovecot: DovecotServer, server_cert_files: ServerCertFiles,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleProxy]:
    """``start(listeners, extra_config)``: a caliproxy process in front of ``module_dovecot``
    with the test TLS certificate, kept for the whole module."""
    started: list[ProxyProcess] = []

    def start(listeners: list[dict[str, Any]], extra_config: dict[str, Any]) -> ProxyProcess:
        directory = tmp_path_factory.mktemp("caliproxy")
        config: dict[str, Any] = {
            "listeners": listeners,
            "upstream": {"imap": {"host": module_dovecot.host, "port": module_dovecot.imaps_port,
                                  "tls": "implicit", "ca_file": str(server_cert_files.ca_pem),
                                  "server_name": "localhost"}},
            "tls": {"certificate": str(server_cert_files.cert_pem),
                    "key": str(server_cert_files.key_pem)},
            "logging": {"level": "info"},
        }
        config.update(extra_config)
        config_path = directory / "caliproxy.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = directory / "caliproxy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "caliproxy", "run", "-c", str(config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        proxy = ProxyProcess(config_path, log_path, process,
                             {item["name"]: item["port"] for item in listeners},
                             server_cert_files.ca_pem)
        started.append(proxy)
        _wait_listening(proxy.ports, process, log_path)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
