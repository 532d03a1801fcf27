#!/usr/bin/env python3
"""Submission benchmark: many small messages and one large one, direct to Postfix and through caliproxy.

One run starts everything on loopback and tears it down again:

* a real Dovecot 2.3 (for Postfix's SASL) and a real Postfix (:class:`caliproxy.demo.postfix.
  PostfixServer`) with the demo CA and server certificate;
* caliproxy itself, the real ``python -m caliproxy run -c FILE`` process, with two implicit-TLS SMTP
  listeners (``caliproxy``: privacy header added, ``caliproxy-untagged``: ``tagging: false``) and an
  implicit-TLS upstream, Postfix's smtps port.

Targets: ``direct`` (Postfix's smtps port), ``caliproxy`` and ``caliproxy-untagged``, and two
baselines from ``bulk_fetch.py``: ``relay`` (a plain TCP relay, Twisted's portforward, in front of
Postfix's smtps port: the client's TLS ends at Postfix; the cost of one more hop through a Python
process) and ``tls-relay`` (the same relay terminating TLS on both sides as caliproxy does, without
reading the bytes: the floor for any Twisted + TLS proxy). Every target is driven by the same
client code (smtplib, one connection for all N messages, no pipelining). Workloads:
``small`` sends N small messages (default 1,000 of ~2 KB) over one logged-in connection, one
transaction after another, as a mail client with an outbox does; ``large`` sends one message of
S MB (default 25). Only the transactions are timed (MAIL to the final reply of DATA); connecting,
TLS and AUTH are not. Every recipient is outside example.test, so Postfix delivers into its
catch-all Maildir and Dovecot stays out of the timing. Rounds rotate the order of the targets.

Needs root (Postfix and Dovecot start as root) and Debian's postfix and Dovecot 2.3::

    python bench/smtp_relay.py                   # 1,000 small messages and one 25 MB, 3 rounds
    python bench/smtp_relay.py -n 200 -s 5 -r 5  # quicker
    python bench/smtp_relay.py --json
    python bench/smtp_relay.py -s 1 --targets direct,caliproxy --profile prof.txt  # py-spy

The bar: caliproxy / direct <= 1.3 for the small messages. ``proxy CPU`` is the CPU time (user +
system) of the process in between per small message, steadier than the times on a busy machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bulk_fetch as bf

from caliproxy.demo.certs import write_demo_certs
from caliproxy.demo.dovecot import DovecotServer, free_port
from caliproxy.demo.postfix import PostfixServer

USER, PASSWORD = "bench", "benchpw"
SENDER, RECIPIENT = "bench@example.test", "sink@bench.example"
TARGETS = ("direct", "caliproxy", "caliproxy-untagged", "relay", "tls-relay")


def small_message(index: int) -> bytes:
    body = (b"Hello, this is a small message of the kind an outbox holds.\r\n" * 30)
    return (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: bench {index}\r\n"
            f"Message-ID: <bench-{index}-{time.monotonic_ns()}@example.test>\r\n"
            "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n").encode() + body


def large_message(megabytes: int) -> bytes:
    attachment = base64.encodebytes(os.urandom(megabytes * 1024 * 1024 * 3 // 4)).replace(b"\n", b"\r\n")
    return (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: large\r\n"
            f"Message-ID: <large-{time.monotonic_ns()}@example.test>\r\n\r\n").encode() + attachment


def connect(port: int, context: ssl.SSLContext) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL("localhost", port, context=context, timeout=120)
    client.login(USER, PASSWORD)
    return client


def timed_small(port: int, context: ssl.SSLContext, count: int) -> float:
    client = connect(port, context)
    messages = [small_message(i) for i in range(count)]
    started = time.perf_counter()
    for raw in messages:
        client.sendmail(SENDER, [RECIPIENT], raw)
    elapsed = time.perf_counter() - started
    client.quit()
    return elapsed


def timed_large(port: int, context: ssl.SSLContext, raw: bytes) -> float:
    client = connect(port, context)
    started = time.perf_counter()
    client.sendmail(SENDER, [RECIPIENT], raw)
    elapsed = time.perf_counter() - started
    client.quit()
    return elapsed


def start_caliproxy(work: Path, certs: Any, postfix: PostfixServer, dovecot: DovecotServer,
                    source: Path = ROOT) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    import yaml

    ports = {"caliproxy": free_port(), "caliproxy-untagged": free_port()}
    config = {
        "listeners": [
            {"name": "caliproxy", "protocol": "smtp", "port": ports["caliproxy"], "tls": "implicit"},
            {"name": "caliproxy-untagged", "protocol": "smtp", "port": ports["caliproxy-untagged"],
             "tls": "implicit", "tagging": False},
        ],
        "upstream": {
            "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit",
                     "ca_file": str(certs.ca_cert), "server_name": "localhost"},
            "smtp": {"host": "127.0.0.1", "port": postfix.smtps_port, "tls": "implicit",
                     "ca_file": str(certs.ca_cert), "server_name": "localhost"},
        },
        "tls": {"certificate": str(certs.server_cert), "key": str(certs.server_key)},
        "logging": {"level": "warning"},
    }
    path = work / "caliproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (work / "caliproxy.log").open("wb")
    # ``source`` first on the path, so another checkout (A/B runs) wins over an editable install
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]))
    process = subprocess.Popen([sys.executable, "-m", "caliproxy", "run", "-c", str(path)],
                               cwd=source, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    for port in ports.values():
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "caliproxy.log").read_text()) from None
                time.sleep(0.05)
    return process, ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=1000, help="small messages per round")
    parser.add_argument("-s", "--size", type=int, default=25, help="MB of the large message")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)} (direct is required)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--caliproxy-source", metavar="DIR", type=Path, default=ROOT,
                        help="run caliproxy from another checkout (A/B comparisons on one machine)")
    parser.add_argument("--profile", metavar="FILE",
                        help="record caliproxy with py-spy during the timed rounds (.svg flame graph, "
                             ".json speedscope, anything else collapsed stacks)")
    args = parser.parse_args()
    targets = tuple(t for t in TARGETS if t in args.targets.split(","))
    if "direct" not in targets or set(args.targets.split(",")) - set(TARGETS):
        parser.error(f"--targets: a subset of {','.join(TARGETS)} with direct")

    work = Path(tempfile.mkdtemp(prefix="caliproxy-bench-smtp-"))
    certs = write_demo_certs(work / "certs")
    dovecot = DovecotServer(work / "dovecot", {USER: PASSWORD}, certs.server_cert, certs.server_key).start()
    postfix = PostfixServer(work / "postfix", dovecot, certs.server_cert, certs.server_key).start()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    profiler = None
    try:
        proxy, proxy_ports = start_caliproxy(work, certs, postfix, dovecot, args.caliproxy_source)
        ports = {"direct": postfix.smtps_port, **proxy_ports}
        middle = {"caliproxy": proxy, "caliproxy-untagged": proxy}
        processes["caliproxy"] = proxy
        for name, tls in (("relay", False), ("tls-relay", True)):
            if name in targets:
                ports[name] = free_port()
                processes[name] = middle[name] = bf.start_relay(
                    work, name, certs, postfix.smtps_port, ports[name], tls_toward_client=tls,
                    tls_upstream=tls, reactor="uvloop")
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        large = large_message(args.size)
        for target in targets:  # warm up: TLS sessions, Postfix's processes, caliproxy's imports
            timed_small(ports[target], context, 20)
        if args.profile:
            profiler = bf.start_profiler(proxy.pid, args.profile, 200)
        samples: dict[str, dict[str, list[float]]] = {
            t: {"small": [], "large": [], "cpu_ms": []} for t in targets}
        for round_number in range(args.rounds):
            order = targets[round_number % len(targets):] + targets[:round_number % len(targets)]
            for target in order:
                before = bf.cpu_seconds(middle[target].pid) if target in middle else 0.0
                samples[target]["small"].append(timed_small(ports[target], context, args.messages))
                if target in middle:
                    used = bf.cpu_seconds(middle[target].pid) - before
                    samples[target]["cpu_ms"].append(1000 * used / args.messages)
                samples[target]["large"].append(timed_large(ports[target], context, large))
        if profiler is not None:
            bf.stop_profiler(profiler)
            profiler = None
        result: dict[str, Any] = {"messages": args.messages, "large_mb": args.size,
                                  "rounds": args.rounds, "load": os.getloadavg(), "targets": {}}
        for target in targets:
            entry: dict[str, Any] = {}
            for workload in ("small", "large"):
                median = statistics.median(samples[target][workload])
                direct = statistics.median(samples["direct"][workload])
                entry[workload] = {"median_s": median, "min_s": min(samples[target][workload]),
                                   "ratio": median / direct, "samples": samples[target][workload]}
            cpu = samples[target]["cpu_ms"]
            entry["small"]["cpu_ms_per_message"] = statistics.median(cpu) if cpu else None
            result["targets"][target] = entry
    finally:
        if profiler is not None:
            bf.stop_profiler(profiler)
        for process in processes.values():
            bf.stop_process(process)
        postfix.cleanup()
        dovecot.cleanup()
        bf.release_workdir(work, keep=args.keep)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.messages} small messages and one {args.size} MB message, {args.rounds} rounds, "
          f"load {result['load'][0]:.2f}")
    print(f"{'target':<20} {'small (s)':>10} {'msg/s':>8} {'ratio':>6} {'proxy CPU':>10}   "
          f"{'large (s)':>10} {'MB/s':>7} {'ratio':>6}")
    for target, entry in result["targets"].items():
        small, big = entry["small"], entry["large"]
        cpu = small["cpu_ms_per_message"]
        cpu_text = f"{cpu:.2f} ms" if cpu is not None else "-"
        print(f"{target:<20} {small['median_s']:>10.3f} {args.messages / small['median_s']:>8.0f} "
              f"{small['ratio']:>6.2f} {cpu_text:>10}   {big['median_s']:>10.3f} "
              f"{len(large) / 1e6 / big['median_s']:>7.1f} {big['ratio']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
