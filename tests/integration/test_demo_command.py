"""`caliproxy demo`, the README's first command, end to end: it starts Dovecot seeded with every
level and the proxy in front; a trusted client sees every sample, the café port fewer, each with
its privacy header; Ctrl-C or SIGTERM stops it and leaves neither server running."""

from __future__ import annotations

import imaplib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caliproxy.demo.dovecot import free_port
from caliproxy.demo.run import DEMO_PASSWORD, DEMO_USER
from caliproxy.demo.seed import samples
from tests.fixtures.upstreams import require_binary

pytestmark = pytest.mark.integration


def _three_free_ports() -> int:
    """A port P with P+1 and P+2 free too (the demo's IMAPS, STARTTLS and café listeners)."""
    for _attempt in range(100):
        port = free_port()
        try:
            for offset in (1, 2):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise AssertionError("no three consecutive free ports")


def _login(port: int, ca: Path, deadline: float) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(ca))
    while True:
        try:
            client = imaplib.IMAP4_SSL("localhost", port, ssl_context=context, timeout=20)
            client.login(DEMO_USER, DEMO_PASSWORD)
            return client
        except (OSError, imaplib.IMAP4.error):
            assert time.monotonic() < deadline, "the demo did not come up"
            time.sleep(0.2)


def _closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_demo_serves_every_level_and_stops_cleanly(tmp_path: Path, stop: int) -> None:
    require_binary("dovecot")
    port = _three_free_ports()
    demo = subprocess.Popen([sys.executable, "-m", "caliproxy", "demo", "--dir", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "tls" / "ca.pem").exists():
            assert demo.poll() is None, demo.stdout.read().decode(errors="replace") if demo.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ca = tmp_path / "tls" / "ca.pem"
        trusted, cafe = _login(port, ca, deadline), _login(port + 2, ca, deadline)
        # (the README's table: 12 messages, 8 of them public or internal)
        assert len(samples()) == 12
        assert trusted.select("INBOX")[1] == [b"12"]
        assert cafe.select("INBOX")[1] == [b"8"]  # confidential and secret do not exist there
        shown = 8
        _, data = cafe.fetch(f"1:{shown}", "(BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)])")
        levels = {parts[1].split(b"level=")[1].split(b";")[0] for parts in data if isinstance(parts, tuple)}
        assert levels and levels <= {b"public", b"internal"}, levels
        trusted.logout()
        cafe.logout()
        # Ctrl-C reaches the whole foreground group; SIGTERM (kill, a service manager) the demo only
        if stop == signal.SIGINT:
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=60)[0].decode(errors="replace")
        assert demo.returncode == 0, output[-2000:]
        assert "caliproxy demo is running" in output
        assert all(_closed(p) for p in (port, port + 1, port + 2))
        # no Dovecot (started with its configuration under the demo's directory) and no proxy left
        left = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True).stdout
        assert left == "", left
    finally:
        try:  # whatever is left of the group (the demo, its proxy) on a failure
            os.killpg(demo.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        demo.wait()
