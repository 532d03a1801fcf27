"""The systemd unit is hardened, notifies readiness, reloads with SIGHUP, and runs what the CLI
offers; and the notify helper speaks the sd_notify datagram protocol."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from caliproxy import cli
from caliproxy.cli import build_parser
from caliproxy.demo.dovecot import ensure_mail_user
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
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "User": "caliproxy",
                       "Group": "caliproxy"}.items():
        assert s[key] == [value], key
    assert s["StateDirectory"] == ["caliproxy"]
    # (systemd would own a ConfigurationDirectory= by root only, whatever group the files have)
    assert "ConfigurationDirectory" not in s and "DynamicUser" not in s


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


def _check_config_as(path: Path, uid: int, gid: int, groups: list[int]) -> int:
    """``caliproxy check-config PATH``'s exit status, run in a child process with that identity.

    Forked rather than executed: the interpreter itself may live where only root can read it
    (a pyenv under /root). The parent has run the same check as root first, so the child needs
    no module it has not imported already."""
    pid = os.fork()
    if pid == 0:  # the child: drop root, check, and leave without running pytest's cleanup
        status = 70
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            with open(os.devnull, "w") as quiet:
                sys.stderr = sys.stdout = quiet
                status = cli.main(["check-config", str(path)])
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a system user and files of root's)")
def test_the_service_user_reads_the_files_the_install_steps_give_it(server_cert_files) -> None:
    """The README's permissions, with /etc/caliproxy in a temporary directory: root's files,
    group caliproxy, 0750 and 0640. The unit's ExecStartPre (check-config, which loads the TLS
    key) passes as the service's user, and fails as another unprivileged user."""
    ensure_mail_user("caliproxy")
    user = pwd.getpwnam("caliproxy")
    nobody = pwd.getpwnam("nobody")
    etc = Path(tempfile.mkdtemp(prefix="caliproxy-etc-"))
    try:
        etc.chmod(0o755)  # (stands for /etc)
        conf, key = etc / "caliproxy", etc / "caliproxy" / "tls" / "privkey.pem"
        (conf / "tls").mkdir(parents=True)
        shutil.copy(server_cert_files.cert_pem, conf / "tls" / "fullchain.pem")
        shutil.copy(server_cert_files.key_pem, key)
        (conf / "caliproxy.yaml").write_text(
            "listeners:\n  - {name: imaps, port: 9993, tls: implicit}\n"
            "upstream:\n  imap: {host: 127.0.0.1, port: 993}\n"
            f"tls:\n  certificate: {conf / 'tls' / 'fullchain.pem'}\n  key: {key}\n")
        for path, mode in ((conf, 0o750), (conf / "tls", 0o750), (conf / "caliproxy.yaml", 0o640),
                           (conf / "tls" / "fullchain.pem", 0o640), (key, 0o640)):
            os.chown(path, 0, user.pw_gid)
            path.chmod(mode)
        assert cli.main(["check-config", str(conf / "caliproxy.yaml")]) == 0  # as root
        assert _check_config_as(conf / "caliproxy.yaml", user.pw_uid, user.pw_gid, [user.pw_gid]) == 0
        assert _check_config_as(conf / "caliproxy.yaml", nobody.pw_uid, nobody.pw_gid, []) != 0
    finally:
        shutil.rmtree(etc)
