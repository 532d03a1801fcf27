"""Command line: ``caliproxy run``, ``check-config``, ``explain``, ``trust``, ``demo`` and
``--version``.

Installs Twisted's asyncio reactor (on uvloop by default) before anything imports the global
reactor, so Twisted and aiosmtpd share one event loop.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from caliproxy import __version__
from caliproxy.errors import CaliproxyError, ConfigError

#: Choices for ``--event-loop``: ``auto`` takes uvloop when it is installed.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def new_event_loop(kind: str = "auto") -> Any:
    """A fresh event loop of ``kind``.

    uvloop (libuv, its TLS in C) is the default: the proxy spends most of its time in the loop's
    socket and TLS work, and uvloop does that work for about a fifth less CPU than asyncio's own
    loop (bench/README.md). asyncio's loop stays available, and is what ``auto`` falls back to
    where uvloop is not installed.
    """
    import asyncio

    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise CaliproxyError("--event-loop uvloop: uvloop is not installed "
                                     "(pip install uvloop)") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def install_reactor(event_loop: str = "auto") -> object:
    """Install Twisted's asyncio reactor on an ``event_loop`` loop once and return it."""
    from twisted.internet import asyncioreactor

    if "twisted.internet.reactor" not in sys.modules:
        asyncioreactor.install(new_event_loop(event_loop))
    from twisted.internet import reactor

    return reactor


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Everything the daemon would check at start; every problem found is printed."""
    from caliproxy.config import load_config
    from caliproxy.net import tls

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    errors: list[str] = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except ConfigError as exc:
            errors.append(str(exc))

    if config.tls is not None:
        def server_tls() -> None:
            assert config.tls is not None
            options = tls.server_options(config.tls.certificate, config.tls.key)
            if config.tls.client_ca is not None:
                from caliproxy.net.facts import request_client_certificates

                request_client_certificates(options, config.tls.client_ca)

        attempt(server_tls)
    for upstream in (config.upstream_imap, config.upstream_smtp):
        if upstream is not None and upstream.ca_file is not None:
            attempt(lambda u=upstream: tls.client_options(u.verify_name, u.ca_file))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    names = ", ".join(f"{l.name} ({l.protocol} {l.address}:{l.port} tls={l.tls})" for l in config.listeners)
    print(f"{args.file}: OK; listeners: {names}; upstream "
          f"{config.upstream_imap.host}:{config.upstream_imap.port} tls={config.upstream_imap.tls}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from caliproxy.config import load_config
    from caliproxy.observe.logs import apply_logging, setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        reactor = install_reactor(args.event_loop)
    except CaliproxyError as exc:
        print(f"caliproxy: {exc}", file=sys.stderr)
        return 1
    setup_logging(config.logging.level, config.logging.format)
    log = logging.getLogger("caliproxy")
    log.info("event loop: %s", type(reactor._asyncioEventloop).__module__.split(".")[0])  # type: ignore[attr-defined]
    from caliproxy.net import systemd
    from caliproxy.service import make_service

    try:
        proxy = make_service(config, reactor)
        proxy.startService()
        if config.metrics is not None:
            proxy.metrics.serve(config.metrics.address, config.metrics.port)
            log.info("metrics on http://%s:%d/metrics", config.metrics.address, config.metrics.port)
    except (CaliproxyError, OSError) as exc:
        print(f"caliproxy: cannot start: {exc}", file=sys.stderr)
        return 1
    for name, port in proxy.ports.items():
        host = port.getHost()
        log.info("listener %s on %s:%d", name, host.host, host.port)
    systemd.notify("READY=1")  # every listener is bound
    interval = systemd.watchdog_interval()
    if interval:
        from twisted.internet.task import LoopingCall

        LoopingCall(systemd.notify, "WATCHDOG=1").start(interval)

    def reload() -> None:
        systemd.notify("RELOADING=1")
        try:
            summary = proxy.reload(load_config(args.config))
        except ConfigError as exc:
            proxy.metrics.reloads.labels("invalid").inc()
            log.error("reload refused, still running the previous configuration:\n%s", exc)
        else:
            proxy.metrics.reloads.labels("ok").inc()
            apply_logging(proxy.config.logging.level, proxy.config.logging.format)
            log.info("%s", summary)
        systemd.notify("READY=1")

    def stop() -> None:
        systemd.notify("STOPPING=1")
        reactor.stop()  # type: ignore[attr-defined]

    # Signals arrive between reactor iterations; hand them to the reactor thread.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reload))  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop))  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(stop))  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", proxy.stopService)  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    log.info("stopped")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    import json

    from caliproxy.config import load_config
    from caliproxy.explain import explain, render_text

    try:
        config = load_config(args.config, check_files=False)
        message = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"caliproxy explain: cannot read {args.message}: {exc.strerror}", file=sys.stderr)
        return 1
    result = explain(message, config.policy, account=args.account, mailbox=args.mailbox,
                     header=config.header)
    print(json.dumps(result, indent=2) if args.json else render_text(result))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from caliproxy.demo.run import run_demo

    return run_demo(Path(args.dir), imap_port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caliproxy",
        description="Privacy mail proxy between mail clients and their IMAP and submission servers.",
    )
    parser.add_argument("--version", action="version", version=f"caliproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the proxy with a configuration file")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML configuration")
    run.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto",
                     help="asyncio event loop under Twisted: auto (uvloop when installed, the "
                          "default), uvloop or asyncio")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file and its certificates")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_cmd_check_config)

    explain = sub.add_parser(
        "explain", help="show a message's features, privacy index, level and every reason"
    )
    explain.add_argument("message", metavar="MESSAGE.eml",
                         help="a whole message (RFC 5322 file); - reads standard input")
    explain.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML configuration")
    explain.add_argument("--account", default="", help="account the message belongs to")
    explain.add_argument("--mailbox", default="INBOX", help="mailbox it is in (default: %(default)s)")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(func=_cmd_explain)

    from caliproxy import trust_cli

    trust = sub.add_parser("trust", help="show the clearance a client connection would get, and why")
    trust_cli.add_arguments(trust)
    trust.set_defaults(func=trust_cli.run)

    demo = sub.add_parser(
        "demo", help="start a local demo upstream (Dovecot) seeded with sample mail and the proxy in front"
    )
    demo.add_argument("--dir", default="/tmp/caliproxy-demo", help="working directory (default: %(default)s)")
    demo.add_argument("--port", type=int, default=9993, help="proxy IMAPS port (STARTTLS on +1, the café listener on +2)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
