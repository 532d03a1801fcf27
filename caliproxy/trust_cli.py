"""``caliproxy trust``: the clearance a described connection would get under a configuration, and
every reason for it.

Builds the same ``ConnectionFacts`` the IO shell captures at login from the command line (a
certificate file is fingerprinted and verified against ``tls.client_ca`` as the handshake would),
runs the pure decision, and prints it as text or JSON. Parsing arguments belongs to ``cli.py``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caliproxy.config import Config, load_config
from caliproxy.errors import ConfigError, PolicyError
from caliproxy.privacy.trust import (
    ConnectionFacts,
    clearance,
    normalise_fingerprint,
    parse_tls_version,
)


class UsageError(Exception):
    """An argument that cannot describe a connection."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML configuration")
    parser.add_argument("--ip", required=True, metavar="ADDR",
                        help="the client's address (as the PROXY header would give it)")
    parser.add_argument("--listener", metavar="NAME",
                        help="listener the client connects to (default: the first IMAP listener)")
    parser.add_argument("--tls", metavar="VERSION",
                        help="TLS version of the connection (1.0-1.3); omit for no TLS")
    parser.add_argument("--cipher", metavar="NAME", help="TLS cipher (shown in the reasons only)")
    cert = parser.add_mutually_exclusive_group()
    cert.add_argument("--cert", metavar="PEM",
                      help="the client certificate (leaf first, then intermediates), verified "
                           "against tls.client_ca as in the handshake")
    cert.add_argument("--fingerprint", metavar="SHA256",
                      help="the client certificate's SHA-256 fingerprint (no device-CA check)")
    parser.add_argument("--account", metavar="USER", help="the login name")
    parser.add_argument("--id", action="append", default=[], metavar="FIELD=VALUE",
                        help="a field the client declared with IMAP ID (repeatable)")
    parser.add_argument("--at", metavar="TIME",
                        help="decide at this ISO 8601 time instead of now (naive: UTC)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _moment(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _client_id(items: list[str]) -> dict[str, str | None] | None:
    if not items:
        return None
    declared: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--id: expected FIELD=VALUE, got {item!r}")
        declared[key] = value
    return declared


def facts_from_arguments(args: argparse.Namespace, config: Config, now: datetime) -> ConnectionFacts:
    """The facts the IO shell would capture for the connection the arguments describe."""
    try:
        ipaddress.ip_address(args.ip)
    except ValueError:
        raise UsageError(f"--ip: not an IP address: {args.ip!r}") from None
    names = [listener.name for listener in config.listeners if listener.protocol == "imap"]
    listener = args.listener or (names[0] if names else "")
    if listener not in names:
        raise UsageError(f"--listener: no IMAP listener is named {listener!r} "
                         f"(listeners: {', '.join(names) or 'none'})")
    version = None
    if args.tls is not None:
        try:
            version = parse_tls_version(args.tls)
        except PolicyError as exc:
            raise UsageError(f"--tls: {exc}") from None
    fingerprint = not_after = None
    chains = False
    if args.fingerprint is not None:
        try:
            fingerprint = normalise_fingerprint(args.fingerprint)
        except PolicyError as exc:
            raise UsageError(f"--fingerprint: {exc}") from None
    elif args.cert is not None:
        from caliproxy.net.facts import verify_certificate_file

        ca_file = config.tls.client_ca if config.tls is not None else None
        try:
            fingerprint, not_after, chains = verify_certificate_file(
                Path(args.cert).read_bytes(), ca_file, now)
        except OSError as exc:
            raise UsageError(f"--cert: cannot read {exc.filename}: {exc.strerror}") from None
        except (ValueError, ConfigError) as exc:
            raise UsageError(f"--cert: {exc}") from None
        except Exception as exc:  # noqa: BLE001  # pyOpenSSL's own errors for a malformed certificate
            raise UsageError(f"--cert: not a usable PEM certificate: {exc}") from None
    if (args.cert or args.fingerprint) and version is None:
        raise UsageError("a client certificate needs a TLS connection: give --tls")
    return ConnectionFacts(
        listener=listener,
        client_address=args.ip,
        tls=version is not None,
        tls_version=version,
        cipher=args.cipher,
        cert_fingerprint=fingerprint,
        chains_to_device_ca=chains,
        cert_not_after=not_after,
        account=args.account,
        client_id=_client_id(args.id),
    )


def report(facts: ConnectionFacts, config: Config, now: datetime) -> dict[str, Any]:
    decided = clearance(facts, config.trust, now=now)
    by_name = {rule.name: rule.level for rule in config.trust.rules}
    return {
        "level": decided.level,
        "rule": decided.rule,
        "rule_level": by_name.get(decided.rule or "", config.trust.default_level),
        "levels": list(config.trust.levels.names),
        "reasons": list(decided.reasons),
        "facts": {
            "listener": facts.listener,
            "client_address": facts.client_address,
            "tls": facts.tls,
            "tls_version": facts.tls_version,
            "cipher": facts.cipher,
            "cert_fingerprint": facts.cert_fingerprint,
            "chains_to_device_ca": facts.chains_to_device_ca,
            "cert_not_after": facts.cert_not_after.isoformat() if facts.cert_not_after else None,
            "account": facts.account,
            "client_id": dict(facts.client_id) if facts.client_id is not None else None,
        },
        "at": now.isoformat(),
    }


def render_text(result: dict[str, Any]) -> str:
    rule = f" (rule {result['rule']}" if result["rule"] else " (no rule matched"
    if result["rule_level"] != result["level"]:
        rule += f"; {result['rule_level']} lowered by the client's ID"
    rule += ")"
    lines = [f"clearance: {result['level']}{rule}", "reasons:"]
    lines += [f"  - {reason}" for reason in result["reasons"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The body of ``caliproxy trust``; returns the exit status."""
    try:
        config = load_config(args.config, check_files=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        now = _moment(args.at)
        facts = facts_from_arguments(args, config, now)
    except UsageError as exc:
        print(f"caliproxy trust: {exc}", file=sys.stderr)
        return 2
    result = report(facts, config, now)
    print(json.dumps(result, indent=2) if args.json else render_text(result))
    return 0
