#!/usr/bin/env python3
"""Bulk download benchmark: ``UID FETCH 1:* BODY.PEEK[]`` direct, through caliproxy, through relays.

One run starts everything on loopback and tears it down again:

* a real Dovecot 2.3 (:class:`caliproxy.demo.dovecot.DovecotServer`) with the demo CA and server
  certificate, bulk-loaded with N messages of about S bytes;
* caliproxy itself, the real ``python -m caliproxy run -c FILE`` process, with an implicit-TLS
  listener and an implicit-TLS upstream;
* ``relay``: a plain TCP relay (Twisted's portforward: no TLS of its own, no parsing) in front of
  Dovecot's implicit-TLS port, so the client's TLS session ends at Dovecot: one more hop through
  a Twisted process and nothing else;
* ``tls-relay``: the same relay terminating TLS on both sides as caliproxy does, still without
  looking at the bytes: the hop plus two TLS sessions in pyOpenSSL. caliproxy minus tls-relay is
  what its IMAP parsing and rewriting cost.

Each target is asked for the whole mailbox several times, in interleaved order, by a lean client
(one socket, ``recv_into`` a fixed buffer, looking only at the newest bytes for the tagged
completion), so the time measured is the servers' and not the client's parsing. Only the FETCH
is timed: connecting, handshakes, LOGIN and EXAMINE are not. During each timed FETCH the CPU
seconds of the process in between (caliproxy or a relay), of all Dovecot processes and of the
client are read from /proc.

``--upstream plain`` reaches Dovecot over plain IMAP instead (caliproxy with ``tls: none``
upstream, the relays forwarding to the plain port, "direct" and "relay" in clear, caliproxy and
tls-relay still TLS toward the client). Dovecot serves clear text several times faster than TLS
(its TLS runs in imap-login, one more process hop), so this shows caliproxy's own ceiling.

Needs root (Dovecot drops privileges to its mail user) and Dovecot 2.3. Run from the project root::

    python bench/bulk_fetch.py                  # 2,000 messages of ~50 KB, 5 rounds
    python bench/bulk_fetch.py --json           # machine-readable result on stdout
    python bench/bulk_fetch.py --profile prof.txt   # py-spy samples of caliproxy (collapsed stacks)

The script is also its own relay process (``--serve-relay``), so that the relays, like caliproxy,
run in processes of their own and never compete for the benchmark client's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

USER, PASSWORD = "bench", "benchpw"
SERVER_NAME = "localhost"  # the demo certificate names localhost and 127.0.0.1
LOOPBACK = "127.0.0.1"
TARGETS = ("direct", "caliproxy", "caliproxy-untagged", "caliproxy-untrusted", "relay", "tls-relay")
# caliproxy's listeners, all on one process: (target, listener name, trust level or None for the
# --untrusted-level, privacy header added)
_LISTENERS = (
    ("caliproxy", "trusted", "secret", True),
    ("caliproxy-untagged", "untagged", "secret", False),
    ("caliproxy-untrusted", "untrusted", None, True),
)
_FETCH_TAG = b"Zb7"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


# -- the lean client -----------------------------------------------------------------------------


class ImapError(RuntimeError):
    pass


class LeanClient:
    """Just enough IMAP to log in, EXAMINE a mailbox and time one bulk FETCH; TLS if ``context``."""

    def __init__(self, port: int, context: ssl.SSLContext | None, buffer_size: int = 1 << 20) -> None:
        raw = socket.create_connection((LOOPBACK, port), timeout=120)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = (context.wrap_socket(raw, server_hostname=SERVER_NAME)
                                    if context is not None else raw)
        self.buffer = bytearray(buffer_size)
        self.view = memoryview(self.buffer)
        self.pending = b""
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"unexpected greeting {greeting[:200]!r}")

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ImapError("connection closed")
            self.pending += data
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def command(self, tag: bytes, text: bytes) -> bytes:
        """Send a command without literals; skip untagged lines; return the tagged line."""
        self.sock.sendall(tag + b" " + text + b"\r\n")
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ImapError(f"{text.split(b' ')[0]!r} failed: {line[:200]!r}")
                return line
            # untagged answers to LOGIN and EXAMINE are short lines, never literals

    def login(self, user: str, password: str, mailbox: str = "INBOX") -> None:
        self.command(b"a1", b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        self.command(b"a2", b'EXAMINE "%s"' % mailbox.encode())

    def timed_fetch(self) -> tuple[float, int]:
        """Time ``UID FETCH 1:* BODY.PEEK[]`` until its tagged OK; return (seconds, bytes)."""
        marker = b"\r\n" + _FETCH_TAG + b" "
        sock, view, size = self.sock, self.view, len(self.buffer)
        tail = b"\r\n"  # the completion may be the first line of the answer (nothing matched)
        total = 0
        started = time.perf_counter()
        sock.sendall(_FETCH_TAG + b" UID FETCH 1:* BODY.PEEK[]\r\n")
        while True:
            n = sock.recv_into(view, size)
            if n == 0:
                raise ImapError("connection closed during FETCH")
            total += n
            # the tagged completion is the very last line: look only at the newest bytes
            window = tail + bytes(view[max(0, n - 512):n])
            found = window.rfind(marker)
            if found >= 0 and window.endswith(b"\r\n"):
                elapsed = time.perf_counter() - started
                status = window[found + len(marker):found + len(marker) + 2]
                if status != b"OK":
                    raise ImapError(f"FETCH failed: {window[found:][:200]!r}")
                return elapsed, total
            tail = window[-(len(marker) + 512):]

    def close(self) -> None:
        try:
            self.sock.sendall(b"z LOGOUT\r\n")
            self.sock.close()
        except OSError:
            pass


# -- CPU accounting ------------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    # the command name is in parentheses and may contain spaces; fields[0] is field 3 (state)
    return data[data.rfind(b")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (all its threads)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(master: int) -> float:
    """CPU time of ``master`` and its direct children (Dovecot forks every service from it)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue
        if int(entry) == master or int(fields[1]) == master:
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def load_average() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


# -- processes under test ------------------------------------------------------------------------


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} does not listen on {port}:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def start_caliproxy(workdir: Path, certs: Any, upstream_port: int, upstream_tls: bool,
                    ports: dict[str, int], untrusted_level: str, log_level: str,
                    extra: dict[str, Any], source: Path = ROOT) -> subprocess.Popen[bytes]:
    """caliproxy with the demo's privacy policy and implicit-TLS listeners on the same mailbox:
    ``trusted`` (clearance secret: every message, each with the privacy header added),
    ``untagged`` (clearance secret, ``tagging: false``: caliproxy relays the session without
    rewriting anything) and ``untrusted`` (a lower clearance: the filtered view with its own UIDs,
    as a phone on public Wi-Fi gets)."""
    import yaml

    from caliproxy.demo.run import DEMO_POLICY

    upstream: dict[str, Any] = {"host": LOOPBACK, "port": upstream_port,
                                "tls": "implicit" if upstream_tls else "none"}
    if upstream_tls:
        upstream.update(ca_file=str(certs.ca_cert), server_name=SERVER_NAME)
    config: dict[str, Any] = {
        "listeners": [{"name": listener, "address": LOOPBACK, "port": ports[listener],
                       "tls": "implicit", "tagging": tagging}
                      for _, listener, _, tagging in _LISTENERS if listener in ports],
        "upstream": {"imap": upstream},
        "tls": {"certificate": str(certs.server_cert), "key": str(certs.server_key)},
        "logging": {"level": log_level},
        "policy": DEMO_POLICY,
        "trust": {"rules": [
            {"name": f"bench-{listener}", "level": level or untrusted_level,
             "match": {"listener": [listener]}}
            for _, listener, level, _ in _LISTENERS if listener in ports
        ]},
    }
    config.update(extra)
    path = workdir / "caliproxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = workdir / "caliproxy.log"
    # ``source`` first on the path, so another checkout (A/B runs) wins over an editable install
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "caliproxy", "run", "-c", str(path)],
            cwd=source, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    for port in ports.values():
        wait_listening(port, process, log, "caliproxy")
    return process


def start_relay(workdir: Path, name: str, certs: Any, upstream_port: int, port: int, *,
                tls_toward_client: bool, tls_upstream: bool, reactor: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-relay",
               "--relay-listen", str(port), "--relay-target", str(upstream_port),
               "--relay-reactor", reactor]
    if tls_toward_client:
        command += ["--relay-server-tls", str(certs.server_cert), str(certs.server_key)]
    if tls_upstream:
        command += ["--relay-upstream-ca", str(certs.ca_cert)]
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    wait_listening(port, process, log, name)
    return process


# -- the relay process ---------------------------------------------------------------------------


def install_reactor(kind: str) -> Any:
    if kind in ("asyncio", "uvloop"):
        import asyncio

        from twisted.internet import asyncioreactor

        if kind == "uvloop":
            import uvloop  # a dependency of caliproxy

            asyncioreactor.install(uvloop.new_event_loop())
        else:
            asyncioreactor.install(asyncio.new_event_loop())
    else:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor

    return reactor


def serve_relay(args: argparse.Namespace) -> int:
    """Forward ``--relay-listen`` to ``--relay-target`` byte for byte, with Twisted's back-pressure.

    ``--relay-server-tls CERT KEY``: accept TLS with that chain (as caliproxy's listener does);
    ``--relay-upstream-ca CA``: connect upstream with verified TLS (as caliproxy's upstream does).
    """
    reactor = install_reactor(args.relay_reactor)
    from OpenSSL import crypto
    from twisted.internet import endpoints
    from twisted.internet import ssl as tssl
    from twisted.protocols import portforward

    server_options = client_options = None
    if args.relay_server_tls:
        cert_file, key_file = (Path(p) for p in args.relay_server_tls)
        # the certificate file holds the leaf, then its CA: the chain a server sends
        chain = [crypto.load_certificate(crypto.FILETYPE_PEM, block)
                 for block in _PEM_CERT.findall(cert_file.read_bytes())]
        server_options = tssl.CertificateOptions(
            privateKey=crypto.load_privatekey(crypto.FILETYPE_PEM, key_file.read_bytes()),
            certificate=chain[0], extraCertChain=chain[1:], raiseMinimumTo=tssl.TLSVersion.TLSv1_2)
    if args.relay_upstream_ca:
        trust = tssl.trustRootFromCertificates(
            [tssl.Certificate.loadPEM(Path(args.relay_upstream_ca).read_bytes())])
        client_options = tssl.optionsForClientTLS(
            SERVER_NAME, trustRoot=trust,
            extraCertificateOptions={"raiseMinimumTo": tssl.TLSVersion.TLSv1_2})

    def no_delay(transport: Any) -> None:
        # as caliproxy does: a small last write (a tagged reply) must not wait for an ACK
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    class RelayClient(portforward.ProxyClient):
        def connectionMade(self) -> None:
            no_delay(self.transport)
            super().connectionMade()

    class RelayServer(portforward.ProxyServer):
        def connectionMade(self) -> None:
            no_delay(self.transport)
            self.transport.pauseProducing()  # nothing is read before the upstream is there
            factory = portforward.ProxyClientFactory()
            factory.protocol = RelayClient
            factory.setServer(self)
            endpoint: Any = endpoints.TCP4ClientEndpoint(reactor, LOOPBACK, args.relay_target)
            if client_options is not None:
                endpoint = endpoints.wrapClientTLS(client_options, endpoint)
            endpoint.connect(factory).addErrback(lambda _: self.transport.loseConnection())

    factory = portforward.ProxyFactory(LOOPBACK, args.relay_target)
    factory.protocol = RelayServer
    factory.noisy = False
    if server_options is not None:
        reactor.listenSSL(args.relay_listen, factory, server_options, interface=LOOPBACK)
    else:
        reactor.listenTCP(args.relay_listen, factory, interface=LOOPBACK)
    reactor.run()
    return 0


# -- the benchmark -------------------------------------------------------------------------------


@dataclass
class Measurement:
    seconds: float
    response_bytes: int
    process_cpu: float | None  # caliproxy or the relay in between; None for direct
    dovecot_cpu: float  # every Dovecot process (imap-login does its TLS, imap reads the mail)
    client_cpu: float  # this benchmark's own client


@dataclass
class Target:
    name: str
    port: int
    client_tls: bool
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    samples: list[Measurement] = field(default_factory=list)
    cold: Measurement | None = None  # the first, untimed-for-the-median fetch

    def summary(self, baseline: float) -> dict[str, Any]:
        seconds = [m.seconds for m in self.samples]
        median = statistics.median(seconds)
        size = statistics.median(m.response_bytes for m in self.samples)
        result: dict[str, Any] = {
            "median_s": round(median, 4),
            "min_s": round(min(seconds), 4),
            "max_s": round(max(seconds), 4),
            "response_bytes": int(size),
            "mb_per_s": round(size / median / 1e6, 1),
            "ratio_to_direct": round(median / baseline, 3),
            "client_tls": self.client_tls,
            "dovecot_cpu_s": round(statistics.median(m.dovecot_cpu for m in self.samples), 3),
            "client_cpu_s": round(statistics.median(m.client_cpu for m in self.samples), 3),
            "first_fetch_s": round(self.cold.seconds, 4) if self.cold else None,
        }
        if self.process is not None:
            cpu = statistics.median(m.process_cpu or 0.0 for m in self.samples)
            result["process_cpu_s"] = round(cpu, 3)
            result["process_cpu_per_wall"] = round(cpu / median, 2)  # 1.0 = one core busy
            result["process_cpu_s_per_100mb"] = round(cpu / (size / 1e8), 3)
        return result


def fetch_once(target: Target, context: ssl.SSLContext, dovecot_master: int) -> Measurement:
    client = LeanClient(target.port, context if target.client_tls else None)
    try:
        client.login(USER, PASSWORD)
        process = target.process
        proc_before = cpu_seconds(process.pid) if process is not None else 0.0
        dovecot_before = tree_cpu_seconds(dovecot_master)
        client_before = time.process_time()
        seconds, nbytes = client.timed_fetch()
        client_cpu = time.process_time() - client_before
        dovecot_cpu = tree_cpu_seconds(dovecot_master) - dovecot_before
        proc_cpu = cpu_seconds(process.pid) - proc_before if process is not None else None
    finally:
        client.close()
    return Measurement(seconds, nbytes, proc_cpu, dovecot_cpu, client_cpu)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from caliproxy.demo.certs import write_demo_certs
    from caliproxy.demo.dovecot import DovecotServer, free_port
    from caliproxy.demo.seed import bulk_messages

    if os.geteuid() != 0:
        raise SystemExit("bulk_fetch.py needs root: Dovecot starts as root and drops to its mail user")
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if set(names) - set(TARGETS) or "direct" not in names:
        raise SystemExit(f"--targets: choose from {', '.join(TARGETS)}; 'direct' is required")
    extra: dict[str, Any] = {}
    if args.proxy_config_extra:
        import yaml

        extra = yaml.safe_load(Path(args.proxy_config_extra).read_text()) or {}
    upstream_tls = args.upstream == "tls"
    load_before = load_average()
    if load_before > 0.5:
        log(args, f"warning: load average {load_before:.2f} before the run; other work on this "
                  "machine makes the numbers noisy")

    workdir = Path(tempfile.mkdtemp(prefix="caliproxy-bench-"))
    workdir.chmod(0o755)
    targets: dict[str, Target] = {}
    dovecot = None
    profiler = None
    try:
        certs = write_demo_certs(workdir / "tls")
        dovecot = DovecotServer(workdir / "dovecot", {USER: PASSWORD}, certs.server_cert, certs.server_key)
        dovecot.start()
        started = time.perf_counter()
        messages = bulk_messages(args.messages, args.size)
        count = dovecot.bulk_load(USER, messages)
        mailbox_bytes = sum(len(m) for m in messages)
        del messages
        log(args, f"Dovecot: {count} messages, {mailbox_bytes / 1e6:.1f} MB loaded in "
                  f"{time.perf_counter() - started:.1f} s; upstream {args.upstream}")
        upstream_port = dovecot.imaps_port if upstream_tls else dovecot.imap_port

        targets["direct"] = Target("direct", upstream_port, client_tls=upstream_tls)
        wanted = [(name, listener) for name, listener, _, _ in _LISTENERS if name in names]
        if wanted:
            ports = {listener: free_port() for _, listener in wanted}
            process = start_caliproxy(workdir, certs, upstream_port, upstream_tls, ports,
                                      args.untrusted_level, args.proxy_log_level, extra,
                                      Path(args.caliproxy_source).resolve())
            for name, listener in wanted:
                targets[name] = Target(name, ports[listener], client_tls=True, process=process)
        if "relay" in names:
            port = free_port()
            process = start_relay(workdir, "relay", certs, upstream_port, port, tls_toward_client=False,
                                  tls_upstream=False, reactor=args.relay_reactor)
            targets["relay"] = Target("relay", port, client_tls=upstream_tls, process=process)
        if "tls-relay" in names:
            port = free_port()
            process = start_relay(workdir, "tls-relay", certs, upstream_port, port,
                                  tls_toward_client=True, tls_upstream=upstream_tls,
                                  reactor=args.relay_reactor)
            targets["tls-relay"] = Target("tls-relay", port, client_tls=True, process=process)
        order = [targets[name] for name in TARGETS if name in targets]

        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        master = int((dovecot.base_dir / "master.pid").read_text().strip())
        # warm-up: Dovecot's index and the page cache, each process's first session, and
        # caliproxy's classification of every message (later rounds find it in its cache)
        for target in order:
            target.cold = fetch_once(target, context, master)
            log(args, f"cold       {target.name:<19} {target.cold.seconds:7.3f} s")
        profiled = next((t.process for t in order if t.name.startswith(args.profile_target)), None)
        if args.profile and profiled is not None:
            profiler = start_profiler(profiled.pid, args.profile, args.profile_rate)
        for round_ in range(args.repetitions):
            # rotate the order so no target always runs right after the same neighbour
            shift = round_ % len(order)
            for target in order[shift:] + order[:shift]:
                m = fetch_once(target, context, master)
                target.samples.append(m)
                log(args, f"round {round_ + 1}/{args.repetitions} {target.name:<19} {m.seconds:7.3f} s "
                          f"{m.response_bytes / m.seconds / 1e6:7.1f} MB/s  CPU s: dovecot "
                          f"{m.dovecot_cpu:.2f} client {m.client_cpu:.2f}"
                          + (f" {target.name} {m.process_cpu:.2f}" if m.process_cpu is not None else ""))
        if profiler is not None:
            stop_profiler(profiler)
            profiler = None
            log(args, f"py-spy profile of {args.profile_target} written to {args.profile}")

        baseline = statistics.median(m.seconds for m in targets["direct"].samples)
        return {
            "workload": "UID FETCH 1:* BODY.PEEK[]",
            "messages": count,
            "message_size": args.size,
            "mailbox_bytes": mailbox_bytes,
            "repetitions": args.repetitions,
            "upstream": args.upstream,
            "relay_reactor": args.relay_reactor,
            "untrusted_level": args.untrusted_level,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": {"before": load_before, "after": load_average()},
            "targets": {t.name: t.summary(baseline) for t in order},
            "samples": {t.name: [asdict(m) for m in t.samples] for t in order},
        }
    finally:
        if profiler is not None:
            stop_profiler(profiler)
        for target in targets.values():
            if target.process is not None:
                stop_process(target.process)
        if dovecot is not None:
            dovecot.cleanup()
        release_workdir(workdir, keep=args.keep)


def start_profiler(pid: int, output: str, rate: int) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    fmt = "speedscope" if output.endswith(".json") else "flamegraph" if output.endswith(".svg") else "raw"
    process = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", fmt,
         "--output", output, "--nonblocking"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy needs a moment to attach
    return process


def stop_profiler(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def release_workdir(workdir: Path, *, keep: bool) -> None:
    """Remove a benchmark's work directory, or say where it is kept (``--keep``)."""
    if keep:
        print(f"kept {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def log(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['workload']}: {report['messages']} messages, {report['mailbox_bytes'] / 1e6:.1f} MB, "
          f"upstream {report['upstream']}, median of {report['repetitions']} rounds, {report['cpus']} CPUs, "
          f"load average {report['load_average']['before']:.2f}")
    print(f"{'target':<19} {'MB':>6} {'median s':>8} {'min s':>6} {'MB/s':>7} {'x direct':>8} "
          f"{'proxy CPU s':>11} {'CPU/wall':>8} {'dovecot CPU s':>13} {'client CPU s':>12}")
    for name, row in report["targets"].items():
        if "process_cpu_s" in row:
            cpu = f"{row['process_cpu_s']:>11.2f} {row['process_cpu_per_wall']:>8.2f}"
        else:
            cpu = f"{'-':>11} {'-':>8}"
        print(f"{name:<19} {row['response_bytes'] / 1e6:>6.1f} {row['median_s']:>8.3f} {row['min_s']:>6.3f} {row['mb_per_s']:>7.1f} "
              f"{row['ratio_to_direct']:>8.2f} {cpu} {row['dovecot_cpu_s']:>13.2f} {row['client_cpu_s']:>12.2f}")
    print("proxy CPU s: the caliproxy or relay process during one FETCH (median); "
          "CPU/wall 1.00 = one core busy the whole time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", "-n", type=int, default=2000, help="messages in INBOX (2000)")
    parser.add_argument("--size", "-s", type=int, default=50_000, help="bytes per message (50000)")
    parser.add_argument("--repetitions", "-r", type=int, default=5, help="timed rounds per target (5)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)} (all)")
    parser.add_argument("--upstream", choices=("tls", "plain"), default="tls",
                        help="how caliproxy and the relays reach Dovecot (tls: implicit TLS)")
    parser.add_argument("--untrusted-level", default="internal",
                        help="clearance of caliproxy-untrusted (internal: sees about 80%% of the "
                             "bulk mail; public: 40%%)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--relay-reactor", choices=("asyncio", "epoll", "uvloop"), default="uvloop",
                        help="reactor of the relay processes (uvloop under Twisted's asyncio "
                             "reactor, like caliproxy)")
    parser.add_argument("--proxy-log-level", default="warning", help="caliproxy logging.level (warning)")
    parser.add_argument("--proxy-config-extra", metavar="YAML",
                        help="YAML mapping merged into caliproxy's configuration (e.g. a policy)")
    parser.add_argument("--caliproxy-source", metavar="DIR", default=str(ROOT),
                        help="run caliproxy from this checkout (e.g. a `git worktree` of another "
                             "commit, for A/B comparisons); default: this one")
    parser.add_argument("--profile", metavar="FILE",
                        help="record caliproxy (or --profile-target) with py-spy during the rounds "
                             "(.svg flame graph, .json speedscope, else collapsed stacks)")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--profile-target", choices=("caliproxy", "relay", "tls-relay"),
                        default="caliproxy", help="the process --profile records (caliproxy)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    # internal: this script is also the relay process
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--relay-listen", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--relay-target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--relay-server-tls", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--relay-upstream-ca", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_relay:
        return serve_relay(args)
    if args.messages < 1 or args.size < 1 or args.repetitions < 1:
        parser.error("--messages, --size and --repetitions must be positive")
    report = run_bench(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
