#!/usr/bin/env python3
"""Header sync benchmark: Thunderbird opening a big INBOX, direct and through caliproxy with a cold
and a warm classification cache.

One run starts everything on loopback and tears it down again:

* a real Dovecot 2.3 with the demo CA and server certificate, bulk-loaded with N messages (20,000
  by default) of about S bytes (``caliproxy.demo.seed.bulk_messages``: list mail, colleagues,
  company-confidential and private mail mixed);
* caliproxy itself, the real ``python -m caliproxy run -c FILE`` process (implicit TLS on both
  sides, the demo's privacy policy, clearance ``secret``: every message shown and tagged), with
  its classification cache in a file.

What a client does when it opens the mailbox, as Thunderbird does, is timed from the SELECT to
the last header::

    select "INBOX"
    UID fetch 1:* (FLAGS)
    UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc ... Received)])

against six targets:

* ``direct``: Dovecot's implicit-TLS port;
* ``relay``: a plain TCP relay in front of it (``bulk_fetch.py``'s, Twisted on the asyncio
  reactor): the client's TLS ends at Dovecot; the cost of one more process hop;
* ``tls-relay``: the same relay terminating TLS on both sides as caliproxy does, without reading
  the bytes: the floor for any proxy of this kind (Twisted, pyOpenSSL, one process);
* ``cold``: a caliproxy started on an empty cache file: the SELECT reads and classifies every
  header (``BODY.PEEK[HEADER]`` in batches) before it answers;
* ``warm-restart``: a caliproxy started on the cache file a cold run filled: the SELECT reads
  the stored features and re-levels them under the policy, no header is fetched;
* ``warm``: a caliproxy that has already served the mailbox: verdicts come from its memory.

``cold`` and ``warm-restart`` start a fresh process for every sample (its start-up is not timed),
in rounds with one ``direct`` sample each; the last ``warm-restart`` process then serves the
``warm`` samples, taken in turn with ``direct``, ``relay`` and ``tls-relay`` (the order rotating
every round), so that these four are compared under the same conditions.
Connecting, the TLS handshake and LOGIN are not timed. Per target: median and minimum seconds,
the share spent in SELECT, the ratio to direct's median, and the CPU seconds of caliproxy and of
Dovecot during one sync, and caliproxy's warm ratio to the TLS relay. The bar for caliproxy is
``warm / direct <= 1.5``.

Needs root (Dovecot drops privileges to its mail user) and Dovecot 2.3. From the project root::

    python bench/header_sync.py                    # 20,000 messages of ~2 KB, 3 rounds
    python bench/header_sync.py -n 5000 -r 5 --json
    python bench/header_sync.py --custom-column    # X-Caliproxy-Privacy in the list as well

It reuses the lean client, CPU accounting and process helpers of ``bulk_fetch.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bulk_fetch as bf

TARGETS = ("direct", "relay", "tls-relay", "cold", "warm-restart", "warm")
RELAYS = ("relay", "tls-relay")
THUNDERBIRD_FIELDS = ("From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
                      "In-Reply-To Content-Type Reply-To Received")
_TAG = b"Hs9"


class SyncClient(bf.LeanClient):
    """The lean client of ``bulk_fetch`` with a timed command of any text."""

    def timed(self, text: bytes) -> tuple[float, int]:
        """Send ``text`` and read until its tagged OK; return (seconds, response bytes)."""
        marker = b"\r\n" + _TAG + b" "
        sock, view, size = self.sock, self.view, len(self.buffer)
        tail = b"\r\n"
        total = 0
        started = time.perf_counter()
        sock.sendall(_TAG + b" " + text + b"\r\n")
        while True:
            n = sock.recv_into(view, size)
            if n == 0:
                raise bf.ImapError("connection closed")
            total += n
            window = tail + bytes(view[max(0, n - 512):n])
            found = window.rfind(marker)
            if found >= 0 and window.endswith(b"\r\n"):
                elapsed = time.perf_counter() - started
                status = window[found + len(marker):found + len(marker) + 2]
                if status != b"OK":
                    raise bf.ImapError(f"{text[:40]!r} failed: {window[found:][:200]!r}")
                return elapsed, total
            tail = window[-(len(marker) + 512):]


@dataclass
class Sample:
    seconds: float  # SELECT + FLAGS + header fetch
    select_s: float
    headers_s: float
    response_bytes: int
    proxy_cpu: float | None
    dovecot_cpu: float


@dataclass
class Target:
    name: str
    samples: list[Sample] = field(default_factory=list)

    def summary(self, baseline: float) -> dict[str, Any]:
        median = statistics.median(s.seconds for s in self.samples)
        row: dict[str, Any] = {
            "median_s": round(median, 4),
            "min_s": round(min(s.seconds for s in self.samples), 4),
            "select_median_s": round(statistics.median(s.select_s for s in self.samples), 4),
            "headers_median_s": round(statistics.median(s.headers_s for s in self.samples), 4),
            "response_bytes": int(statistics.median(s.response_bytes for s in self.samples)),
            "ratio_to_direct": round(median / baseline, 3),
            "dovecot_cpu_s": round(statistics.median(s.dovecot_cpu for s in self.samples), 3),
        }
        if self.samples[0].proxy_cpu is not None:
            row["proxy_cpu_s"] = round(statistics.median(s.proxy_cpu or 0.0 for s in self.samples), 3)
        return row


def header_command(custom_column: bool) -> bytes:
    fields = THUNDERBIRD_FIELDS + (" X-Caliproxy-Privacy" if custom_column else "")
    return f"UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({fields})])".encode()


def sync_once(port: int, context: ssl.SSLContext, proxy_pid: int | None, master: int, custom_column: bool
              ) -> Sample:
    client = SyncClient(port, context)
    try:
        client.command(b"a1", b'LOGIN "%s" "%s"' % (bf.USER.encode(), bf.PASSWORD.encode()))
        proxy_before = bf.cpu_seconds(proxy_pid) if proxy_pid is not None else 0.0
        dovecot_before = bf.tree_cpu_seconds(master)
        select_s, select_bytes = client.timed(b'select "INBOX"')
        flags_s, flags_bytes = client.timed(b"UID fetch 1:* (FLAGS)")
        headers_s, header_bytes = client.timed(header_command(custom_column))
        dovecot_cpu = bf.tree_cpu_seconds(master) - dovecot_before
        proxy_cpu = bf.cpu_seconds(proxy_pid) - proxy_before if proxy_pid is not None else None
    finally:
        client.close()
    return Sample(select_s + flags_s + headers_s, select_s, headers_s, select_bytes + flags_bytes + header_bytes,
                  proxy_cpu, dovecot_cpu)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from caliproxy.demo.certs import write_demo_certs
    from caliproxy.demo.dovecot import DovecotServer, free_port
    from caliproxy.demo.seed import bulk_messages

    if os.geteuid() != 0:
        raise SystemExit("header_sync.py needs root: Dovecot starts as root and drops to its mail user")
    load_before = bf.load_average()
    workdir = Path(tempfile.mkdtemp(prefix="caliproxy-bench-"))
    workdir.chmod(0o755)
    dovecot = None
    running: list[Any] = []
    starts = [0]
    targets = {name: Target(name) for name in TARGETS}
    try:
        certs = write_demo_certs(workdir / "tls")
        dovecot = DovecotServer(workdir / "dovecot", {bf.USER: bf.PASSWORD}, certs.server_cert, certs.server_key)
        dovecot.start()
        started = time.perf_counter()
        count = dovecot.bulk_load(bf.USER, bulk_messages(args.messages, args.size))
        log(args, f"Dovecot: {count} messages loaded in {time.perf_counter() - started:.1f} s")
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        master = int((dovecot.base_dir / "master.pid").read_text().strip())

        def start(cache: Path) -> tuple[Any, int]:
            port = free_port()
            starts[0] += 1
            run_dir = workdir / f"caliproxy-{starts[0]}"
            run_dir.mkdir()
            process = bf.start_caliproxy(run_dir, certs, dovecot.imaps_port, True, {"trusted": port},
                                         "internal", args.proxy_log_level, {"cache": {"path": str(cache)}})
            running.append(process)
            return process, port

        def stop(process: Any) -> None:
            bf.stop_process(process)
            running.remove(process)

        def record(name: str, port: int, pid: int | None) -> None:
            sample = sync_once(port, context, pid, master, args.custom_column)
            targets[name].samples.append(sample)
            log(args, f"{name:<13} {sample.seconds:7.3f} s (select {sample.select_s:6.3f} s, headers "
                      f"{sample.headers_s:6.3f} s)" + (f"  caliproxy CPU {sample.proxy_cpu:.2f} s"
                                                       if sample.proxy_cpu is not None else ""))

        relay_ports = {name: free_port() for name in RELAYS}
        for name in RELAYS:
            running.append(bf.start_relay(workdir, name, certs, dovecot.imaps_port, relay_ports[name],
                                          tls_toward_client=name == "tls-relay",
                                          tls_upstream=name == "tls-relay", reactor="uvloop"))
        sync_once(dovecot.imaps_port, context, None, master, args.custom_column)  # Dovecot's index, page cache
        for name in RELAYS:
            sync_once(relay_ports[name], context, None, master, args.custom_column)  # the relay's first session
        filled = workdir / "cold-0.db"
        for round_ in range(args.repetitions):
            record("direct", dovecot.imaps_port, None)
            process, port = start(workdir / f"cold-{round_}.db")
            record("cold", port, process.pid)
            stop(process)
            process, port = start(filled)
            record("warm-restart", port, process.pid)
            if round_ < args.repetitions - 1:
                stop(process)
        # The last process stays for the warm samples, taken in turn with direct and the relays
        # (rotating the order), so that the four are compared under the same conditions.
        steady = [("direct", dovecot.imaps_port, None), *((name, relay_ports[name], None) for name in RELAYS),
                  ("warm", port, process.pid)]
        for round_ in range(args.repetitions):
            for name, target_port, pid in steady[round_ % 4:] + steady[:round_ % 4]:
                record(name, target_port, pid)
        stop(process)
        baseline = statistics.median(s.seconds for s in targets["direct"].samples)
        return {
            "workload": "select INBOX; UID fetch 1:* (FLAGS); " + header_command(args.custom_column).decode(),
            "messages": count,
            "message_size": args.size,
            "repetitions": args.repetitions,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": {"before": load_before, "after": bf.load_average()},
            "targets": {name: t.summary(baseline) for name, t in targets.items()},
            "samples": {name: [asdict(s) for s in t.samples] for name, t in targets.items()},
        }
    finally:
        for process in running:
            bf.stop_process(process)
        if dovecot is not None:
            dovecot.cleanup()
        bf.release_workdir(workdir, keep=args.keep)


log = bf.log


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['workload']}\n{report['messages']} messages, median of {report['repetitions']} rounds, "
          f"{report['cpus']} CPUs, load average {report['load_average']['before']:.2f}")
    print(f"{'target':<13} {'median s':>8} {'min s':>6} {'select s':>8} {'headers s':>9} {'x direct':>8} "
          f"{'proxy CPU s':>11} {'dovecot CPU s':>13}")
    for name, row in report["targets"].items():
        cpu = f"{row['proxy_cpu_s']:>11.2f}" if "proxy_cpu_s" in row else f"{'-':>11}"
        print(f"{name:<13} {row['median_s']:>8.3f} {row['min_s']:>6.3f} {row['select_median_s']:>8.3f} "
              f"{row['headers_median_s']:>9.3f} {row['ratio_to_direct']:>8.2f} {cpu} {row['dovecot_cpu_s']:>13.2f}")
    targets = report["targets"]
    print(f"warm / tls-relay {targets['warm']['median_s'] / targets['tls-relay']['median_s']:.2f}; "
          f"bar warm / direct <= 1.5: {'met' if targets['warm']['ratio_to_direct'] <= 1.5 else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", "-n", type=int, default=20_000, help="messages in INBOX (20000)")
    parser.add_argument("--size", "-s", type=int, default=2_000, help="bytes per message (2000)")
    parser.add_argument("--repetitions", "-r", type=int, default=3, help="samples per target (3)")
    parser.add_argument("--custom-column", action="store_true",
                        help="ask for X-Caliproxy-Privacy in the header list too (a custom column)")
    parser.add_argument("--proxy-log-level", default="warning", help="caliproxy logging.level (warning)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.size < 1 or args.repetitions < 1:
        parser.error("--messages, --size and --repetitions must be positive")
    report = run_bench(args)
    print(json.dumps(report, indent=2) if args.json else "", end="")
    if not args.json:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
