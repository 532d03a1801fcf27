#!/usr/bin/env python3
"""Submission benchmark: many small messages and one large one, direct to Postfix and through caliproxy.

One run starts everything on loopback and tears it down again:

* a real Dovecot 2.3 (for Postfix's SASL) and a real Postfix (:class:`caliproxy.demo.postfix.
  PostfixServer`) with the demo CA and server certificate;
* caliproxy itself, the real ``python -m caliproxy run -c FILE`` process, with two implicit-TLS SMTP
  listeners (``caliproxy``: privacy header added, ``caliproxy-untagged``: ``tagging: false``) and an
  implicit-TLS upstream, Postfix's smtps port.

Targets: ``direct`` (Postfix's smtps port), ``caliproxy`` and ``caliproxy-untagged``. Workloads:
``small`` sends N small messages (default 1,000 of ~2 KB) over one logged-in connection, one
transaction after another, as a mail client with an outbox does; ``large`` sends one message of
S MB (default 25). Only the transactions are timed (MAIL to the final reply of DATA); connecting,
TLS and AUTH are not. Every recipient is outside example.test, so Postfix delivers into its
catch-all Maildir and Dovecot stays out of the timing. Rounds rotate the order of the targets.

Needs root (Postfix and Dovecot start as root) and Debian's postfix and Dovecot 2.3::

    python bench/smtp_relay.py                   # 1,000 small messages and one 25 MB, 3 rounds
    python bench/smtp_relay.py -n 200 -s 5 -r 5  # quicker
    python bench/smtp_relay.py --json

The bar of the issue that asked for it: caliproxy / direct <= 1.3.
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

from caliproxy.demo.certs import write_demo_certs  # noqa: E402
from caliproxy.demo.dovecot import DovecotServer, free_port  # noqa: E402
from caliproxy.demo.postfix import PostfixServer  # noqa: E402

USER, PASSWORD = "bench", "benchpw"
SENDER, RECIPIENT = "bench@example.test", "sink@bench.example"
TARGETS = ("direct", "caliproxy", "caliproxy-untagged")


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


def start_caliproxy(work: Path, certs: Any, postfix: PostfixServer, dovecot: DovecotServer) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
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
    process = subprocess.Popen([sys.executable, "-m", "caliproxy", "run", "-c", str(path)],
                               cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="caliproxy-bench-smtp-"))
    certs = write_demo_certs(work / "certs")
    dovecot = DovecotServer(work / "dovecot", {USER: PASSWORD}, certs.server_cert, certs.server_key).start()
    postfix = PostfixServer(work / "postfix", dovecot, certs.server_cert, certs.server_key).start()
    process = None
    try:
        process, proxy_ports = start_caliproxy(work, certs, postfix, dovecot)
        ports = {"direct": postfix.smtps_port, **proxy_ports}
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        large = large_message(args.size)
        for target in TARGETS:  # warm up: TLS sessions, Postfix's processes, caliproxy's imports
            timed_small(ports[target], context, 20)
        samples: dict[str, dict[str, list[float]]] = {t: {"small": [], "large": []} for t in TARGETS}
        for round_number in range(args.rounds):
            order = TARGETS[round_number % len(TARGETS):] + TARGETS[:round_number % len(TARGETS)]
            for target in order:
                samples[target]["small"].append(timed_small(ports[target], context, args.messages))
                samples[target]["large"].append(timed_large(ports[target], context, large))
        result: dict[str, Any] = {"messages": args.messages, "large_mb": args.size,
                                  "rounds": args.rounds, "load": os.getloadavg(), "targets": {}}
        for target in TARGETS:
            entry = {}
            for workload in ("small", "large"):
                median = statistics.median(samples[target][workload])
                direct = statistics.median(samples["direct"][workload])
                entry[workload] = {"median_s": median, "min_s": min(samples[target][workload]),
                                   "ratio": median / direct, "samples": samples[target][workload]}
            result["targets"][target] = entry
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        postfix.cleanup()
        dovecot.cleanup()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.messages} small messages and one {args.size} MB message, {args.rounds} rounds, "
          f"load {result['load'][0]:.2f}")
    print(f"{'target':<20} {'small (s)':>10} {'msg/s':>8} {'ratio':>6}   {'large (s)':>10} {'MB/s':>7} {'ratio':>6}")
    for target, entry in result["targets"].items():
        small, big = entry["small"], entry["large"]
        print(f"{target:<20} {small['median_s']:>10.3f} {args.messages / small['median_s']:>8.0f} "
              f"{small['ratio']:>6.2f}   {big['median_s']:>10.3f} {len(large) / 1e6 / big['median_s']:>7.1f} "
              f"{big['ratio']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
