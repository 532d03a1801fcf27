"""Running it for years: metrics, reload on SIGHUP, shutdown on SIGTERM, redacted logs.

Everything here drives the real ``caliproxy run`` process in front of a real Dovecot.
"""

from __future__ import annotations

import imaplib
import json
import signal
import socket
import ssl
import time
import urllib.request

import pytest
import yaml

from caliproxy.demo.dovecot import free_port

pytestmark = pytest.mark.integration

SECRET_POLICY = {"default_level": "internal",
                 "rules": [{"name": "secret-subject", "level": "secret",
                            "match": {"header": {"name": "Subject", "regex": "SECRET"}}}]}


def login(proxy, listener: str = "imaps") -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    client = imaplib.IMAP4_SSL("localhost", proxy.ports[listener], ssl_context=context, timeout=20)
    client.login("alice", "alicepw")
    return client


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def rewrite_config(proxy, change) -> None:
    config = yaml.safe_load(proxy.config_path.read_text())
    change(config)
    proxy.config_path.write_text(yaml.safe_dump(config))


@pytest.fixture
def running(dovecot, proxy_factory):
    dovecot.deliver("alice", b"Subject: hello\r\n\r\nvisible body\r\n")
    dovecot.deliver("alice", b"Subject: SECRET plans\r\n\r\nsecret body\r\n")
    metrics_port = free_port()
    proxy = proxy_factory(dovecot, extra_config={
        "policy": SECRET_POLICY,
        "trust": {"rules": [{"name": "everyone", "level": "secret"}]},
        "metrics": {"address": "127.0.0.1", "port": metrics_port},
        "logging": {"level": "debug", "format": "json"},
    })
    proxy.extra["metrics_port"] = metrics_port
    return proxy


def scrape(proxy) -> str:
    url = f"http://127.0.0.1:{proxy.extra['metrics_port']}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_metrics_are_served_with_bounded_labels(running):
    client = login(running)
    client.select("INBOX")
    client.fetch("1:*", "(FLAGS)")
    client.logout()
    wait_for(lambda: 'caliproxy_connections_active{listener="imaps"} 0.0' in scrape(running))
    text = scrape(running)
    for name in ("caliproxy_connections_total", "caliproxy_sessions_total", "caliproxy_imap_commands_total",
                 "caliproxy_cache_entries", "caliproxy_reloads_total", "caliproxy_messages_hidden_total",
                 'caliproxy_bytes_total{direction="out",listener="imaps"}',
                 'caliproxy_messages_tagged_total{level="secret"} 1.0',
                 'caliproxy_cache_lookups_total{result="miss"} 2.0',
                 "caliproxy_classification_seconds_count 1.0",
                 "caliproxy_upstream_connect_seconds_count"):
        assert name in text, name
    assert 'caliproxy_imap_commands_total{status="OK",verb="SELECT"} 1.0' in text
    assert 'caliproxy_sessions_total{clearance="secret",listener="imaps"} 1.0' in text
    assert "alice" not in text and "INBOX" not in text  # no user or mailbox in any label


def test_logs_are_json_and_never_hold_credentials_or_content(running):
    client = login(running)
    client.select("INBOX")
    client.fetch("1:*", "(BODY.PEEK[])")
    client.logout()
    running.stop()
    lines = [line for line in running.log().splitlines() if line.startswith("{")]
    assert lines and all(json.loads(line)["level"] for line in lines)
    text = running.log()
    for secret in ("alicepw", "secret body", "SECRET plans", "YWxpY2U"):  # password, body, subject, base64
        assert secret not in text
    assert any('"caliproxy.audit"' in line and "clearance" in line for line in lines)


def test_invalid_reload_keeps_the_old_configuration(running):
    client = login(running)
    rewrite_config(running, lambda c: c.update(bogus_key=1))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in running.log())
    assert 'caliproxy_reloads_total{outcome="invalid"} 1.0' in scrape(running)
    assert client.noop()[0] == "OK"  # nobody was dropped
    assert login(running).select("INBOX")[1] == [b"2"]


def test_reload_refuses_a_new_header_name(running):
    """Clients cached messages under the old name: a new one needs a restart."""
    client = login(running)
    rewrite_config(running, lambda c: c.update(header={"name": "X-Home-Privacy"}))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "header.name changed: restart caliproxy" in running.log())
    client.select("INBOX")
    _, data = client.fetch("1", "(BODY.PEEK[HEADER])")
    assert data[0][1].startswith(b"X-Caliproxy-Privacy: v=1;")


@pytest.mark.parametrize("change, refusal", [
    (lambda c: c.update(cache={"path": "/nonexistent/elsewhere.sqlite"}), "cache changed"),
    (lambda c: c["metrics"].update(port=free_port()), "metrics changed"),
], ids=["cache", "metrics"])
def test_reload_refuses_what_lives_as_long_as_the_process(running, change, refusal):
    """The cache file is open and the metrics socket bound: no silent half-reload."""
    rewrite_config(running, change)
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: f"{refusal}: restart caliproxy" in running.log())
    assert 'caliproxy_reloads_total{outcome="invalid"} 1.0' in scrape(running)


def test_reload_applies_a_new_log_level(running):
    rewrite_config(running, lambda c: c["logging"].update(level="warning", format="human"))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: 'caliproxy_reloads_total{outcome="ok"} 1.0' in scrape(running))
    before = len(running.log())
    login(running).logout()
    rewrite_config(running, lambda c: c["logging"].update(level="info"))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in running.log()[before:])
    lines = running.log()[before:].splitlines()
    quiet = lines[:next(i for i, line in enumerate(lines) if "reloaded" in line)]
    assert not any(" INFO " in line or "DEBUG" in line for line in quiet), quiet  # (warnings only)
    assert " INFO caliproxy: reloaded" in running.log()[before:]  # human format again


def test_a_reload_to_another_upstream_judges_its_mail_afresh(dovecot_factory, proxy_factory):
    """Two upstreams whose INBOXes have the same UIDVALIDITY and UIDs: what the proxy judged of
    the first one's UID 1 must not be taken for the second one's after a reload."""
    first, second = dovecot_factory(), dovecot_factory()
    first.deliver("alice", b"Subject: hello\r\n\r\nvisible body\r\n")
    second.deliver("alice", b"Subject: SECRET plans\r\n\r\nsecret body\r\n")
    for upstream in (first, second):
        upstream.doveadm("mailbox", "update", "-u", "alice", "--uid-validity", "4242", "INBOX")
        status = upstream.doveadm("mailbox", "status", "-u", "alice", "uidvalidity messages", "INBOX")
        assert status.split() == ["INBOX", "messages=1", "uidvalidity=4242"], status
    proxy = proxy_factory(first, extra_config={
        "policy": SECRET_POLICY, "trust": {"rules": [{"name": "everyone", "level": "internal"}]}})
    # connected before the reload, logged in after it: its session is the first upstream's
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    early = imaplib.IMAP4_SSL("localhost", proxy.ports["imaps"], ssl_context=context, timeout=20)
    rewrite_config(proxy, lambda c: c["upstream"]["imap"].update(port=second.imaps_port))
    proxy.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in proxy.log())
    early.login("alice", "alicepw")
    assert early.select("INBOX")[1] == [b"1"]  # the first upstream's hello, judged as its own
    early.logout()
    client = login(proxy)
    assert client.select("INBOX")[1] == [b"0"]  # the secret one is hidden, not shown as hello
    assert client.uid("FETCH", "1:*", "(BODY.PEEK[])")[1] in ([None], [])
    client.logout()


def test_reload_lowering_clearance_ends_affected_sessions_only(running):
    imaps = login(running)
    imaps.select("INBOX")

    def lower(config):
        config["trust"] = {"rules": [{"name": "imaps-now-internal", "level": "internal",
                                      "match": {"listener": ["imaps"]}},
                                     {"name": "others", "level": "secret"}]}

    rewrite_config(running, lower)
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "session(s) ended because their clearance was lowered" in running.log())
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        for _ in range(3):
            imaps.noop()
    # reconnecting: judged by the new rules, the secret message no longer exists
    again = login(running)
    assert again.select("INBOX")[1] == [b"1"]
    again.logout()


def test_reload_ends_connections_not_yet_logged_in_when_the_rules_change(running):
    """A connection made before the reload would be judged at login by the rules it connected
    under: it is ended, and the reconnecting client is judged by the new ones."""
    context = ssl.create_default_context(cafile=str(running.ca_pem))
    early = imaplib.IMAP4_SSL("localhost", running.ports["imaps"], ssl_context=context, timeout=20)
    rewrite_config(running, lambda c: c.update(trust={"rules": [{"name": "all", "level": "internal"}]}))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "1 not yet logged in ended" in running.log())
    assert early.readline() == b"* BYE configuration reloaded; reconnect\r\n"
    again = login(running)
    assert again.select("INBOX")[1] == [b"1"]  # internal now: the secret message is hidden
    again.logout()


def test_renewed_certificate_is_used_for_new_handshakes(running, tls_ca, tmp_path):
    old = login(running)
    leaf = tls_ca.issue_cert("localhost", "127.0.0.1", common_name="renewed.caliproxy.test")
    cert, key = tmp_path / "renewed.pem", tmp_path / "renewed-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    rewrite_config(running, lambda c: c.update(tls={"certificate": str(cert), "key": str(key)}))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in running.log())
    context = ssl.create_default_context(cafile=str(running.ca_pem))
    with context.wrap_socket(socket.create_connection(("127.0.0.1", running.ports["imaps"])),
                             server_hostname="localhost") as sock:
        subject = dict(item[0] for item in sock.getpeercert()["subject"])
    assert subject.get("commonName") == "renewed.caliproxy.test"
    assert old.noop()[0] == "OK"  # the connection made before the renewal is untouched


def test_sigterm_says_bye_and_exits_zero(running):
    client = login(running)
    client.select("INBOX")
    running.process.send_signal(signal.SIGTERM)
    assert client.readline() == b"* BYE caliproxy is shutting down\r\n"
    assert running.process.wait(15) == 0


def test_ready_is_notified_once_listeners_accept(dovecot, proxy_factory, tmp_path, monkeypatch):
    """Type=notify: systemd hears READY=1 only when every listener accepts connections."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", path)  # inherited by the caliproxy process
        proxy = proxy_factory(dovecot)
        assert server.recv(100) == b"READY=1"
        for port in proxy.ports.values():
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_reload_keeps_idle_and_bulk_sessions_alive(running, dovecot):
    """SIGHUP with a new certificate and the same clearances: an IDLE session and a session
    in the middle of a large FETCH both carry on."""
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 8000  # ~8 MB
    dovecot.bulk_load("alice", [big])
    idler = login(running)
    idler.select("INBOX")
    tag = idler._new_tag()
    idler.send(tag + b" IDLE\r\n")
    assert idler.readline().startswith(b"+")
    context = ssl.create_default_context(cafile=str(running.ca_pem))
    fetcher = context.wrap_socket(socket.create_connection(("127.0.0.1", running.ports["imaps"])),
                                  server_hostname="localhost")
    fetcher.recv(4096)
    fetcher.sendall(b"a LOGIN alice alicepw\r\nb SELECT INBOX\r\nc FETCH 3 BODY.PEEK[]\r\n")
    received = fetcher.recv(65536)
    while b"FETCH (BODY[] {" not in received:
        received += fetcher.recv(65536)
    rewrite_config(running, lambda c: c["logging"].update(level="info"))
    running.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in running.log())
    while b"\r\nc OK" not in received[-200:]:
        chunk = fetcher.recv(1 << 20)
        assert chunk, "the FETCH was cut by the reload"
        received += chunk
    assert len(received) > 8_000_000
    idler.send(b"DONE\r\n")
    # (Dovecot's "* OK Still here" keepalive may come first: it runs on its own clock)
    while not (line := idler.readline()).startswith(tag + b" "):
        assert line == b"* OK Still here\r\n", line
    assert line.startswith(tag + b" OK")
    assert idler.noop()[0] == "OK"


@pytest.mark.parametrize("event_loop, expected", [(None, "uvloop"), ("asyncio", "asyncio")])
def test_either_event_loop_serves_reloads_and_stops(dovecot, proxy_factory, event_loop, expected):
    """uvloop is the default loop; asyncio's own stays a working choice. Both carry a tagged
    session, a SIGHUP reload and a SIGTERM shutdown (Python's signal handlers run on both)."""
    dovecot.deliver("alice", b"Subject: hello\r\n\r\nvisible body\r\n")
    proxy = proxy_factory(dovecot, event_loop=event_loop)
    assert f"event loop: {expected}" in proxy.log()
    client = login(proxy)
    client.select("INBOX")
    _, data = client.fetch("1", "(BODY.PEEK[HEADER])")
    assert data[0][1].startswith(b"X-Caliproxy-Privacy: ")
    proxy.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload" in proxy.log().lower())
    assert client.noop()[0] == "OK"
    proxy.process.send_signal(signal.SIGTERM)
    assert client.readline() == b"* BYE caliproxy is shutting down\r\n"
    assert proxy.process.wait(15) == 0
