"""The systemd unit is hardened, notifies readiness, reloads with SIGHUP, and runs what the CLI
offers; and the notify helper speaks the sd_notify datagram protocol."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from caliproxy.cli import build_parser
from caliproxy.net.systemd import notify, watchdog_interval

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "caliproxy.service"


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_is_notify_hardened_and_reloadable() -> None:
    s = _settings()
    assert s["Type"] == ["notify"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "DynamicUser": "yes"}.items():
        assert s[key] == [value], key
    assert s["StateDirectory"] == ["caliproxy"] and s["ConfigurationDirectory"] == ["caliproxy"]


def test_unit_commands_exist_in_the_cli() -> None:
    parser = build_parser()
    for command in _settings()["ExecStart"] + _settings()["ExecStartPre"]:
        argv = command.split()[1:]
        parser.parse_args(argv)  # raises SystemExit on an unknown command or option


def test_notify_sends_a_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1")
        assert server.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert watchdog_interval() == 30.0


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with its command paths pointing at this installation's caliproxy."""
    binary = shutil.which("caliproxy")
    if binary is None:
        pytest.skip("the caliproxy command is not installed (pip install -e .)")
    unit = tmp_path / "caliproxy.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/caliproxy", binary))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_and_security_score(tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True)
    match = re.search(r"Overall exposure level for caliproxy.service: ([0-9.]+) (\w+)", security.stdout)
    assert match, security.stdout[-500:] + security.stderr
    assert float(match.group(1)) <= 2.5 and match.group(2) == "OK", match.group(0)


def test_write_execute_memory_is_needed_by_tls_verification() -> None:
    """Why the unit leaves MemoryDenyWriteExecute off: under W^X (prctl PR_SET_MDWE, Linux 6.3+,
    what systemd applies) pyOpenSSL cannot install a verification callback."""
    code = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit(3)\n"  # PR_SET_MDWE, REFUSE_EXEC_GAIN
        "from OpenSSL import SSL\n"
        "ctx = SSL.Context(SSL.TLS_METHOD)\n"
        "try:\n"
        "    ctx.set_verify(SSL.VERIFY_PEER, lambda *a: True)\n"
        "except MemoryError:\n"
        "    sys.exit(4)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True)
    if result.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE")
    assert result.returncode == 4, result.stderr
