"""``caliproxy explain``: everything the privacy engine concludes about one message, and why.

``explain`` returns a JSON-ready dict (the features, what was believed, each index axis with its
reasons, the level with the rules that fired, the exact header that would be injected);
``render_text`` turns it into the human-readable report. Reading the file and the configuration
and choosing the output format belong to the command line, not here.
"""

from __future__ import annotations

from typing import Any

from caliproxy.privacy.header import DEFAULT_HEADER, HEADER_LENGTH, HeaderName, render_header
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.scoring import AXIS_WEIGHTS, REASONS
from caliproxy.privacy.verdict import judge


def explain(
    message_bytes: bytes, policy: Policy, *, account: str = "", mailbox: str = "INBOX",
    header: HeaderName = DEFAULT_HEADER,
) -> dict[str, Any]:
    """Judge ``message_bytes`` (a whole message, as in a .eml file) under ``policy``; ``header``
    is the configured name of our header."""
    features, verdict = judge(
        message_bytes, policy, account=account, mailbox=mailbox, size=len(message_bytes),
        privacy_header=header.lower,
    )
    index, level = verdict.index, verdict.level
    evidence = index.evidence
    boundary = evidence.boundary
    return {
        "features": features.to_dict(),
        "evidence": {
            "boundary_position": None if boundary is None else boundary.position,
            "local_origin": evidence.local_origin,
            "untrusted_because": evidence.untrusted_because,
            "trusted_hops": evidence.trusted_hops,
            "outside_hops": evidence.outside_hops,
            "internal_cleartext_hops": evidence.internal_cleartext_hops,
            "auth_results": [[r.method, r.result, r.domain] for r in evidence.auth_results],
            "believed_auth_positions": list(evidence.believed_auth_positions),
            "ignored_auth_fields": evidence.ignored_auth_fields,
            "spam": evidence.spam,
            "spam_score": evidence.spam_score,
        },
        "index": {
            "version": index.version,
            "aggregate": index.aggregate,
            "grade": index.grade,
            "axes": [
                {
                    "axis": axis.axis.value,
                    "score": axis.score,
                    "weight": AXIS_WEIGHTS[axis.axis],
                    "reasons": [
                        {
                            "code": r.code,
                            "points": r.points,
                            "meaning": REASONS[r.code].meaning,
                            "detail": r.detail,
                        }
                        for r in axis.reasons
                    ],
                }
                for axis in index.axes
            ],
        },
        "level": {
            "level": level.level,
            "default": level.default,
            "scale": list(policy.levels.names),
            "rules": [
                {"name": rule.name, "level": rule.level, "because": list(rule.because)}
                for rule in level.fired
            ],
        },
        "header": render_header(verdict, header).decode("ascii"),
        "header_length": HEADER_LENGTH,
    }


def _addresses(values: list[str]) -> str:
    return ", ".join(values) if values else "-"


def render_text(result: dict[str, Any]) -> str:
    """The report a person reads; every number is followed by what earned it."""
    features = result["features"]
    evidence = result["evidence"]
    index = result["index"]
    level = result["level"]
    out: list[str] = []
    add = out.append

    add("Message")
    add(
        f"  account {features['account'] or '-'}, mailbox {features['mailbox']}, "
        f"{features['size']} bytes"
    )
    add(f"  from {_addresses(features['from'])}")
    if features["sender"]:
        add(f"  sender {_addresses(features['sender'])}")
    add(f"  to {_addresses(features['to'])}")
    if features["cc"]:
        add(f"  cc {_addresses(features['cc'])}")
    if features["list_id"]:
        add(f"  list {features['list_id']}")
    add(
        f"  content {features['content_type'] or '-'}, protection {features['protection']}, "
        f"sensitivity {features['sensitivity'] or '-'}"
    )
    if features["privacy_headers_seen"]:
        add(f"  {features['privacy_headers_seen']} existing privacy header(s) ignored")

    add("")
    add("Received hops, newest first")
    if not features["received"]:
        add("  (none)")
    boundary = evidence["boundary_position"]
    for number, hop in enumerate(features["received"], 1):
        if boundary is None:
            trust = "not believed"
        elif hop["position"] < boundary:
            trust = "trusted"
        elif hop["position"] == boundary:
            trust = "boundary" if not evidence["local_origin"] else "origin"
        else:
            trust = "outside, not believed"
        peer = hop["from_rdns"] or hop["from_host"] or "-"
        if hop["from_ip"]:
            peer += f" [{hop['from_ip']}]"
        add(
            f"  {number}. {peer} -> {hop['by_host'] or '-'}  "
            f"{hop['protocol'] or '-'} {hop['tls']}"
            f"{' authenticated' if hop['authenticated'] else ''}  ({trust})"
        )
    if evidence["untrusted_because"]:
        add(f"  no hop believed: {evidence['untrusted_because']}")

    add("")
    add("Authentication-Results")
    for field in features["auth_results"]:
        believed = field["position"] in evidence["believed_auth_positions"]
        results = " ".join(f"{m}={r}" + (f"({d})" if d else "") for m, r, d in field["results"])
        add(
            f"  {field['authserv_id'] or '-'}: {results or '(none)'}"
            f"  ({'believed' if believed else 'ignored'})"
        )
    if not features["auth_results"]:
        add("  (none)")
    spam = evidence["spam"]
    spam_text = "unknown" if spam is None else ("yes" if spam else "no")
    if evidence["spam_score"] is not None:
        spam_text += f" (score {evidence['spam_score']:g})"
    add(f"Spam: {spam_text}")

    add("")
    add(f"Privacy index v{index['version']}: {index['aggregate']} (grade {index['grade']})")
    for axis in index["axes"]:
        add(f"  {axis['axis']:<15} {axis['score']:>3}   (weight {axis['weight']}%)")
        for reason in axis["reasons"]:
            detail = f" - {reason['detail']}" if reason["detail"] else ""
            add(f"      {reason['points']:+4d}  {reason['code']:<9} {reason['meaning']}{detail}")

    add("")
    add(f"Confidentiality: {level['level']}  (scale: {' < '.join(level['scale'])})")
    if level["default"]:
        add("  no rule matched: policy default")
    for rule in level["rules"]:
        add(f"  rule {rule['name']!r} -> {rule['level']}: {'; '.join(rule['because'])}")

    add("")
    add(f"Header ({result['header_length']} bytes):")
    add("  " + result["header"].rstrip("\r\n").rstrip())
    return "\n".join(out) + "\n"
