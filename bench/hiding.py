#!/usr/bin/env python3
"""Hiding benchmark: what the filtered view of an untrusted listener costs, direct and through caliproxy.

One run starts everything on loopback and tears it down again:

* a real Dovecot 2.3 with the demo CA and server certificate; INBOX is bulk-loaded with N messages
  (20,000 by default, ``caliproxy.demo.seed.bulk_messages``) and a second mailbox, ``Big``, with M
  messages (50,000 by default);
* one caliproxy process (``python -m caliproxy run -c FILE``, implicit TLS on both sides, a
  classification cache file) with two listeners on the same mailboxes: ``trusted`` (clearance
  ``secret``: every message) and ``untrusted`` (clearance ``confidential``).

The policy is the demo's (``caliproxy.demo.run.DEMO_POLICY``) plus one rule that makes Bob's
company-confidential mail ``secret``. In the bulk mix (40 % public, 40 % internal, 15 %
confidential, 5 % secret, senders Bob, Chloe, Dana and Erin in turn) that is exactly one message
in ten above the untrusted clearance: the untrusted listener sees 90 % of each mailbox, with its
own UIDs. The run checks the counts (EXISTS) before it times anything.

Both caliproxy listeners serve every mailbox once before the timed rounds (warm cache: the
verdicts come from the process's memory). Then, in interleaved rounds:

1. **Header sync** of INBOX, as Thunderbird opens a mailbox and exactly as ``header_sync.py``
   times it: ``select "INBOX"``, ``UID fetch 1:* (FLAGS)``, ``UID fetch 1:* (UID RFC822.SIZE
   FLAGS BODY.PEEK[HEADER.FIELDS (...)])``, direct, through both listeners and through the
   plain and the TLS relay of ``bulk_fetch.py`` (the cost of one more hop, and the floor for a
   Twisted + pyOpenSSL proxy). The bar is **untrusted / direct <= 2**.
2. **SELECT** of ``Big`` alone, on the same targets. Reported is the latency each adds (its
   median minus direct's, in ms). The bar for caliproxy is **adds <= 200 ms**.

Connecting, the TLS handshake and LOGIN are not timed; every sample uses a fresh connection.

Needs root (Dovecot drops privileges to its mail user) and Dovecot 2.3. From the project root::

    python bench/hiding.py                                  # 20,000 + 50,000 messages, 3 rounds
    python bench/hiding.py -n 5000 --select-messages 10000 -r 5 --json

It reuses the lean client, CPU accounting and process helpers of ``bulk_fetch.py`` and the
header-sync client of ``header_sync.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bulk_fetch as bf
import header_sync as hs

TARGETS = ("direct", "relay", "tls-relay", "trusted", "untrusted")
RELAYS = ("relay", "tls-relay")
UNTRUSTED_LEVEL = "confidential"
BIG_MAILBOX = "Big"
# Bob's company-confidential mail is secret: with the demo's private rule, 10 % of the bulk mix
HIDING_RULE = {"name": "bob-confidential-is-secret", "level": "secret",
               "match": {"sender": ["bob@example.test"], "sensitivity": ["company-confidential"]}}
SYNC_BAR = 2.0
SELECT_BAR_MS = 200.0


def hiding_policy() -> dict[str, Any]:
    from caliproxy.demo.run import DEMO_POLICY

    policy = copy.deepcopy(DEMO_POLICY)
    policy["rules"].append(HIDING_RULE)
    return policy


def expected_hidden(count: int) -> int:
    """How many of the first ``count`` bulk messages are above the untrusted clearance."""
    from caliproxy.demo.seed import bulk_level

    # bulk_messages() writes message i from ("bob", "chloe", "dana", "erin")[i % 4]
    return sum(1 for i in range(count)
               if bulk_level(i) == "secret" or (bulk_level(i) == "confidential" and i % 4 == 0))


def login(port: int, context: ssl.SSLContext) -> hs.SyncClient:
    client = hs.SyncClient(port, context)
    client.command(b"a1", b'LOGIN "%s" "%s"' % (bf.USER.encode(), bf.PASSWORD.encode()))
    return client


def exists(port: int, context: ssl.SSLContext, mailbox: str) -> int:
    """The EXISTS count a client is told when it opens ``mailbox`` (read-only)."""
    client = login(port, context)
    try:
        client.sock.sendall(b'c1 EXAMINE "%s"\r\n' % mailbox.encode())
        count = -1
        while True:
            line = client._line()
            if line.startswith(b"* ") and line.endswith(b" EXISTS"):
                count = int(line.split()[1])
            elif line.startswith(b"c1 "):
                if not line.startswith(b"c1 OK"):
                    raise bf.ImapError(f"EXAMINE {mailbox} failed: {line[:200]!r}")
                return count
    finally:
        client.close()


def select_once(port: int, context: ssl.SSLContext, mailbox: str) -> float:
    client = login(port, context)
    try:
        seconds, _ = client.timed(b'select "%s"' % mailbox.encode())
    finally:
        client.close()
    return seconds


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from caliproxy.demo.certs import write_demo_certs
    from caliproxy.demo.dovecot import DovecotServer, free_port
    from caliproxy.demo.seed import bulk_messages

    if os.geteuid() != 0:
        raise SystemExit("hiding.py needs root: Dovecot starts as root and drops to its mail user")
    load_before = bf.load_average()
    workdir = Path(tempfile.mkdtemp(prefix="caliproxy-bench-"))
    workdir.chmod(0o755)
    dovecot = proxy = None
    relays: list[Any] = []
    try:
        certs = write_demo_certs(workdir / "tls")
        dovecot = DovecotServer(workdir / "dovecot", {bf.USER: bf.PASSWORD}, certs.server_cert, certs.server_key)
        dovecot.start()
        started = time.perf_counter()
        inbox = dovecot.bulk_load(bf.USER, bulk_messages(args.messages, args.size))
        big = dovecot.bulk_load(bf.USER, bulk_messages(args.select_messages, args.size), BIG_MAILBOX)
        log(args, f"Dovecot: {inbox} + {big} messages loaded in {time.perf_counter() - started:.1f} s")
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        master = int((dovecot.base_dir / "master.pid").read_text().strip())

        ports = {"trusted": free_port(), "untrusted": free_port()}
        run_dir = workdir / "caliproxy"
        run_dir.mkdir()
        proxy = bf.start_caliproxy(run_dir, certs, dovecot.imaps_port, True, ports, UNTRUSTED_LEVEL,
                                   args.proxy_log_level, {"policy": hiding_policy(),
                                                          "cache": {"path": str(workdir / "cache.db")}})
        relay_ports = {name: free_port() for name in RELAYS}
        for name in RELAYS:
            relays.append(bf.start_relay(run_dir, name, certs, dovecot.imaps_port, relay_ports[name],
                                         tls_toward_client=name == "tls-relay",
                                         tls_upstream=name == "tls-relay", reactor="uvloop"))
        port_of = {"direct": dovecot.imaps_port, **relay_ports, **ports}

        # warm-up: Dovecot's index and the page cache, then caliproxy's verdicts for both listeners
        for name in TARGETS:
            started = time.perf_counter()
            hs.sync_once(port_of[name], context, None, master, False)
            select_once(port_of[name], context, BIG_MAILBOX)
            log(args, f"warm-up {name:<9} {time.perf_counter() - started:7.2f} s")
        counts = {name: {"INBOX": exists(port_of[name], context, "INBOX"),
                         BIG_MAILBOX: exists(port_of[name], context, BIG_MAILBOX)} for name in TARGETS}
        hidden = {"INBOX": expected_hidden(inbox), BIG_MAILBOX: expected_hidden(big)}
        for mailbox, total in (("INBOX", inbox), (BIG_MAILBOX, big)):
            shown = counts["untrusted"][mailbox]
            if any(counts[name][mailbox] != total for name in (*RELAYS, "direct", "trusted")) \
                    or shown != total - hidden[mailbox]:
                raise SystemExit(f"{mailbox}: unexpected counts {counts} (hidden should be {hidden[mailbox]})")
            log(args, f"{mailbox}: {total} messages, {total - shown} hidden from untrusted "
                      f"({100 * (total - shown) / total:.1f} %)")

        sync: dict[str, list[hs.Sample]] = {name: [] for name in TARGETS}
        select: dict[str, list[float]] = {name: [] for name in TARGETS}
        for round_ in range(args.repetitions):
            order = TARGETS[round_ % len(TARGETS):] + TARGETS[:round_ % len(TARGETS)]
            for name in order:
                sample = hs.sync_once(port_of[name], context, proxy.pid if name in ("trusted", "untrusted") else None,
                                      master, False)
                sync[name].append(sample)
                seconds = select_once(port_of[name], context, BIG_MAILBOX)
                select[name].append(seconds)
                log(args, f"round {round_ + 1} {name:<9} sync {sample.seconds:7.3f} s (select "
                          f"{sample.select_s:6.3f} s)  select {BIG_MAILBOX} {seconds * 1000:8.1f} ms")

        sync_direct = statistics.median(s.seconds for s in sync["direct"])
        select_direct = statistics.median(select["direct"])
        sync_rows: dict[str, Any] = {}
        select_rows: dict[str, Any] = {}
        for name in TARGETS:
            median = statistics.median(s.seconds for s in sync[name])
            sync_rows[name] = {
                "messages_shown": counts[name]["INBOX"],
                "median_s": round(median, 4),
                "min_s": round(min(s.seconds for s in sync[name]), 4),
                "select_median_s": round(statistics.median(s.select_s for s in sync[name]), 4),
                "headers_median_s": round(statistics.median(s.headers_s for s in sync[name]), 4),
                "response_bytes": int(statistics.median(s.response_bytes for s in sync[name])),
                "ratio_to_direct": round(median / sync_direct, 3),
                "dovecot_cpu_s": round(statistics.median(s.dovecot_cpu for s in sync[name]), 3),
            }
            if name in ("trusted", "untrusted"):
                sync_rows[name]["proxy_cpu_s"] = round(statistics.median(s.proxy_cpu or 0.0 for s in sync[name]), 3)
            median = statistics.median(select[name])
            select_rows[name] = {
                "messages_shown": counts[name][BIG_MAILBOX],
                "median_ms": round(median * 1000, 1),
                "min_ms": round(min(select[name]) * 1000, 1),
                "added_ms": round((median - select_direct) * 1000, 1),
            }
        return {
            "header_sync": {
                "workload": "select INBOX; UID fetch 1:* (FLAGS); " + hs.header_command(False).decode(),
                "messages": inbox,
                "hidden_from_untrusted": inbox - counts["untrusted"]["INBOX"],
                "bar": f"untrusted / direct <= {SYNC_BAR}",
                "meets_bar": sync_rows["untrusted"]["ratio_to_direct"] <= SYNC_BAR,
                "targets": sync_rows,
            },
            "select": {
                "workload": f'select "{BIG_MAILBOX}"',
                "messages": big,
                "hidden_from_untrusted": big - counts["untrusted"][BIG_MAILBOX],
                "bar": f"adds <= {SELECT_BAR_MS:.0f} ms",
                "meets_bar": all(select_rows[n]["added_ms"] <= SELECT_BAR_MS for n in ("trusted", "untrusted")),
                "targets": select_rows,
            },
            "untrusted_level": UNTRUSTED_LEVEL,
            "message_size": args.size,
            "repetitions": args.repetitions,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": {"before": load_before, "after": bf.load_average()},
            "samples": {
                "header_sync": {name: [s.seconds for s in sync[name]] for name in TARGETS},
                "select": {name: select[name] for name in TARGETS},
            },
        }
    finally:
        if proxy is not None:
            bf.stop_process(proxy)
        for relay in relays:
            bf.stop_process(relay)
        if dovecot is not None:
            dovecot.cleanup()
        bf.release_workdir(workdir, keep=args.keep)


log = bf.log


def print_table(report: dict[str, Any]) -> None:
    sync, select = report["header_sync"], report["select"]
    print(f"median of {report['repetitions']} rounds, warm cache, untrusted clearance "
          f"{report['untrusted_level']}, {report['cpus']} CPUs, load average "
          f"{report['load_average']['before']:.2f}")
    print(f"\nheader sync of INBOX: {sync['messages']} messages, {sync['hidden_from_untrusted']} hidden "
          f"from untrusted; bar {sync['bar']}: {'met' if sync['meets_bar'] else 'MISSED'}")
    print(f"{'target':<10} {'shown':>6} {'median s':>8} {'min s':>6} {'select s':>8} {'headers s':>9} "
          f"{'x direct':>8} {'proxy CPU s':>11}")
    for name, row in sync["targets"].items():
        cpu = f"{row['proxy_cpu_s']:>11.2f}" if "proxy_cpu_s" in row else f"{'-':>11}"
        print(f"{name:<10} {row['messages_shown']:>6} {row['median_s']:>8.3f} {row['min_s']:>6.3f} "
              f"{row['select_median_s']:>8.3f} {row['headers_median_s']:>9.3f} {row['ratio_to_direct']:>8.2f} {cpu}")
    print(f"untrusted / tls-relay {sync['targets']['untrusted']['median_s'] / sync['targets']['tls-relay']['median_s']:.2f}")
    print(f"\nSELECT of {BIG_MAILBOX}: {select['messages']} messages, {select['hidden_from_untrusted']} hidden "
          f"from untrusted; bar {select['bar']}: {'met' if select['meets_bar'] else 'MISSED'}")
    print(f"{'target':<10} {'shown':>6} {'median ms':>9} {'min ms':>7} {'added ms':>8}")
    for name, row in select["targets"].items():
        added = f"{row['added_ms']:>8.1f}" if name != "direct" else f"{'-':>8}"
        print(f"{name:<10} {row['messages_shown']:>6} {row['median_ms']:>9.1f} {row['min_ms']:>7.1f} {added}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", "-n", type=int, default=20_000, help="messages in INBOX (20000)")
    parser.add_argument("--select-messages", type=int, default=50_000,
                        help=f"messages in {BIG_MAILBOX}, the mailbox of the SELECT test (50000)")
    parser.add_argument("--size", "-s", type=int, default=2_000, help="bytes per message (2000)")
    parser.add_argument("--repetitions", "-r", type=int, default=3, help="samples per target (3)")
    parser.add_argument("--proxy-log-level", default="warning", help="caliproxy logging.level (warning)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if min(args.messages, args.select_messages, args.size, args.repetitions) < 1:
        parser.error("--messages, --select-messages, --size and --repetitions must be positive")
    report = run_bench(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
