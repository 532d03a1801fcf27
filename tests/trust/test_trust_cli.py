"""``caliproxy trust``: the clearance of a described connection and every reason, as text or
JSON; a certificate file is verified against tls.client_ca the way the handshake does it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from caliproxy.cli import main
from tests.fixtures.upstreams import ServerCertFiles
from tests.trust.conftest import DeviceCerts
from tests.trust.test_clearance import shown


@pytest.fixture
def config_file(tmp_path: Path, server_cert_files: ServerCertFiles, device_certs: DeviceCerts) -> Path:
    config = {
        "listeners": [{"name": "imaps", "port": 9993, "tls": "implicit"},
                      {"name": "imap", "port": 9143, "tls": "starttls"}],
        "upstream": {"imap": {"host": "127.0.0.1", "port": 993}},
        "tls": {"certificate": str(server_cert_files.cert_pem), "key": str(server_cert_files.key_pem),
                "client_ca": str(device_certs.ca_pem)},
        "devices": [
            {"name": "laptop", "fingerprint": device_certs.laptop.fingerprint, "expires": "2099-01-01"},
            {"name": "old-phone", "fingerprint": device_certs.expired.fingerprint},
        ],
        "trust": {
            "rules": [
                {"name": "devices", "level": "secret", "match": {"device": ["laptop", "old-phone"]}},
                {"name": "device-ca", "level": "confidential", "match": {"device_ca": True}},
                {"name": "lan", "level": "internal",
                 "match": {"network": ["192.168.0.0/16", "fd00::/8"], "listener": "imaps"}},
            ],
            "client_id": [{"name": "webmail", "level": "public", "match": {"name": "*webmail*"}}],
        },
    }
    path = tmp_path / "caliproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["trust", *args])
    out, err = capsys.readouterr()
    return status, out, err


def as_json(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> dict[str, Any]:
    status, out, _ = run(capsys, "-c", str(config), "--json", *args)
    assert status == 0
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("which", "level", "rule", "chains"),
    [
        ("laptop", "secret", "devices", True),
        ("unregistered", "confidential", "device-ca", True),
        ("expired", "public", None, False),
        ("foreign", "public", None, False),
        ("pinned", "public", None, False),
    ],
)
def test_certificate_files_are_verified_like_the_handshake(
        capsys: pytest.CaptureFixture[str], config_file: Path, device_certs: DeviceCerts,
        which: str, level: str, rule: str | None, chains: bool) -> None:
    cert = getattr(device_certs, which)
    result = as_json(capsys, config_file, "--ip", "203.0.113.5", "--tls", "1.3", "--cert", str(cert.pem))
    assert (result["level"], result["rule"]) == (level, rule)
    assert result["facts"]["cert_fingerprint"] == cert.fingerprint
    assert result["facts"]["chains_to_device_ca"] is chains


def test_text_output_lists_every_reason(capsys: pytest.CaptureFixture[str], config_file: Path,
                                        device_certs: DeviceCerts) -> None:
    status, out, _ = run(capsys, "-c", str(config_file), "--ip", "192.168.1.20", "--tls", "TLSv1.3",
                         "--fingerprint", device_certs.laptop.fingerprint.upper(), "--account", "alice")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "clearance: secret (rule devices)"
    assert lines[1] == "reasons:"
    assert lines[2] == "  - listener 'imaps', client 192.168.1.20, TLS 1.3"
    assert "  - account 'alice'" in lines
    assert f"  - client certificate {shown(device_certs.laptop.fingerprint)} is registered device 'laptop'" \
        in lines
    assert "  - rule 'devices' matched (device laptop|old-phone): level secret" in lines


def test_networks_listeners_and_the_client_id(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    assert as_json(capsys, config_file, "--ip", "192.168.9.9")["level"] == "internal"
    assert as_json(capsys, config_file, "--ip", "fd00::9")["level"] == "internal"
    assert as_json(capsys, config_file, "--ip", "192.168.9.9", "--listener", "imap")["level"] == "public"
    assert as_json(capsys, config_file, "--ip", "10.9.9.9")["level"] == "public"
    lowered = as_json(capsys, config_file, "--ip", "192.168.9.9", "--id", "name=Roundcube Webmail")
    assert (lowered["level"], lowered["rule"], lowered["rule_level"]) == ("public", "lan", "internal")
    _status, out, _ = run(capsys, "-c", str(config_file), "--ip", "192.168.9.9", "--id", "name=webmail")
    assert out.splitlines()[0] == "clearance: public (rule lan; internal lowered by the client's ID)"


def test_at_decides_at_another_time(capsys: pytest.CaptureFixture[str], config_file: Path,
                                    device_certs: DeviceCerts) -> None:
    args = ("--ip", "10.0.0.1", "--tls", "1.2", "--fingerprint", device_certs.laptop.fingerprint)
    assert as_json(capsys, config_file, *args, "--at", "2098-12-31T23:59:59")["level"] == "secret"
    late = as_json(capsys, config_file, *args, "--at", "2099-01-02T00:00:00")
    assert late["level"] == "public"
    assert any("registration expired at 2099-01-02T00:00:00Z" in r for r in late["reasons"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ip", "nope"], "--ip: not an IP address"),
        (["--ip", "10.0.0.1", "--listener", "pop3"], "--listener: no IMAP listener is named 'pop3'"),
        (["--ip", "10.0.0.1", "--tls", "1.4"], "--tls: unknown TLS version"),
        (["--ip", "10.0.0.1", "--fingerprint", "ab" * 32], "needs a TLS connection"),
        (["--ip", "10.0.0.1", "--tls", "1.3", "--fingerprint", "abc"], "--fingerprint: 'abc' is not"),
        (["--ip", "10.0.0.1", "--tls", "1.3", "--cert", "/nonexistent.pem"], "--cert: cannot read"),
        (["--ip", "10.0.0.1", "--id", "novalue"], "--id: expected FIELD=VALUE"),
        (["--ip", "10.0.0.1", "--at", "tomorrow"], "--at: not an ISO 8601 time"),
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], config_file: Path,
                              args: list[str], message: str) -> None:
    status, out, err = run(capsys, "-c", str(config_file), *args)
    assert status == 2 and out == "" and message in err


def test_bad_config_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: []\nupstream: {imap: {host: x, port: 1}}\ntrust: {rules: 3}\n")
    status, _, err = run(capsys, "-c", str(bad), "--ip", "10.0.0.1")
    assert status == 1 and "trust.rules" in err and "expected a list of rules" in err


def test_the_installed_command_runs(config_file: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "caliproxy", "trust", "-c", str(config_file),
                           "--ip", "192.168.1.1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("clearance: internal (rule lan)\nreasons:\n")


def test_check_config_reads_the_device_ca(capsys: pytest.CaptureFixture[str], config_file: Path,
                                          tmp_path: Path) -> None:
    assert main(["check-config", str(config_file)]) == 0
    (tmp_path / "not-a-ca.pem").write_text("nothing here")
    broken = config_file.read_text().replace(str(Path(yaml.safe_load(config_file.read_text())
                                                      ["tls"]["client_ca"])),
                                             str(tmp_path / "not-a-ca.pem"))
    config_file.write_text(broken)
    capsys.readouterr()
    assert main(["check-config", str(config_file)]) == 1
    assert "not-a-ca.pem: no PEM certificate found" in capsys.readouterr().err
