"""The systemd unit is hardened, notifies readiness, reloads with SIGHUP, and runs what the CLI
offers; and the notify helper speaks the sd_notify datagram protocol."""

from __future__ import annotations

import socket
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
