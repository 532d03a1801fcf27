"""The privacy index v1: four axes scored 0–100 from believed evidence, their weighted aggregate
and an A–E grade, every point carried by a named reason from ``scoring.py``.

An axis score is the sum of its reasons' points, clamped to 0–100. How well a message was
protected on its way is a different question from how sensitive it is; the latter is
``confidentiality.py``'s.

Pure module: standard library only plus ``caliproxy.privacy.*``; no IO, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass

from caliproxy.privacy.evidence import Evidence, gather_evidence
from caliproxy.privacy.features import MessageFeatures, Protection
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.received import TlsVersion
from caliproxy.privacy.scoring import INDEX_VERSION, REASONS, Axis, aggregate_of, grade_of


@dataclass(frozen=True)
class Reason:
    """One entry of the scoring table applied to a message, with what made it apply."""

    code: str
    axis: Axis
    points: int
    detail: str = ""


@dataclass(frozen=True)
class AxisScore:
    axis: Axis
    score: int
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class PrivacyIndex:
    """The index of one message under one policy."""

    version: int
    axes: tuple[AxisScore, ...]
    aggregate: int
    grade: str
    evidence: Evidence

    def score(self, target: str) -> int:
        """``aggregate`` or an axis name → its score."""
        if target == "aggregate":
            return self.aggregate
        for axis_score in self.axes:
            if axis_score.axis.value == target:
                return axis_score.score
        raise KeyError(target)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(reason for axis_score in self.axes for reason in axis_score.reasons)


def _reason(code: str, detail: str = "") -> Reason:
    spec = REASONS[code]
    return Reason(code, spec.axis, spec.points, detail)


_TLS_CODES = {
    TlsVersion.TLS1_3: "TLS13",
    TlsVersion.TLS1_2: "TLS12",
    TlsVersion.TLS1_1: "TLS11",
    TlsVersion.TLS1_0: "TLS10",
    TlsVersion.SSL3: "SSL3",
    TlsVersion.TLS_UNKNOWN_VERSION: "TLS",
    TlsVersion.NONE: "PLAIN",
}

_PROTECTION_CODES = {
    Protection.PGP_ENCRYPTED: "PGPENC",
    Protection.SMIME_ENCRYPTED: "SMIMEENC",
    Protection.INLINE_PGP_ENCRYPTED: "PGPINL",
    Protection.PGP_SIGNED: "PGPSIG",
    Protection.SMIME_SIGNED: "SMIMESIG",
    Protection.INLINE_PGP_SIGNED: "PGPINLSIG",
    Protection.NONE: "NOE2E",
}


def _transport(ev: Evidence) -> list[Reason]:
    reasons: list[Reason] = []
    hop = ev.boundary
    if hop is None:
        reasons.append(_reason("NOHOP", ev.untrusted_because))
    elif ev.local_origin:
        reasons.append(_reason("LOCAL", f"origin hop by {hop.by_host or '?'}"))
    else:
        peer = hop.from_rdns or hop.from_host or "?"
        if hop.from_ip:
            peer = f"{peer} [{hop.from_ip}]"
        via = f"{hop.protocol}, {hop.tls.value}" if hop.protocol else hop.tls.value
        reasons.append(_reason(_TLS_CODES[hop.tls], f"{peer} -> {hop.by_host or '?'} ({via})"))
    if ev.internal_cleartext_hops:
        reasons.append(_reason("INCLR", f"{ev.internal_cleartext_hops} hop(s)"))
    if ev.outside_hops:
        reasons.append(
            _reason("XHOP", f"{ev.outside_hops} hop(s), {ev.outside_tls_claims} claiming TLS")
        )
    return reasons


def _aligned(dkim_domain: str, from_domain: str) -> bool:
    """Relaxed alignment (RFC 7489 §3.1.1) approximated without the public suffix list: one domain
    equals or is a subdomain of the other, and the shorter has at least two labels."""
    if not dkim_domain or not from_domain:
        return False
    shorter, longer = sorted((dkim_domain, from_domain), key=len)
    return shorter.count(".") >= 1 and (longer == shorter or longer.endswith("." + shorter))


def _authenticity(features: MessageFeatures, ev: Evidence) -> list[Reason]:
    hop = ev.boundary
    if hop is not None and (hop.authenticated or ev.local_origin):
        # The user's own relay authenticated the submitter (or it started inside the chain):
        # nothing a third party added can make that more certain.
        how = f"{hop.protocol or 'local'} at {hop.by_host or '?'}"
        return [_reason("AUTHSUB", how)]

    reasons: list[Reason] = []
    results = ev.auth_results
    from_domains = features.from_domains
    from_domain = next(iter(from_domains)) if len(from_domains) == 1 else ""

    def having(method: str, *outcomes: str) -> list[str]:
        return [r.domain for r in results if r.method == method and r.result in outcomes]

    dmarc_pass = [d for d in having("dmarc", "pass") if from_domain and d in ("", from_domain)]
    if dmarc_pass:
        reasons.append(_reason("DMARC+", from_domain))
    elif having("dmarc", "fail"):
        reasons.append(_reason("DMARC-", ", ".join(sorted(set(having("dmarc", "fail"))))))

    dkim_pass = having("dkim", "pass")
    if dkim_pass:
        reasons.append(_reason("DKIM+", ", ".join(sorted(set(dkim_pass)))))
        aligned = sorted({d for d in dkim_pass if _aligned(d, from_domain)})
        if aligned:
            reasons.append(_reason("DKIMA", f"{', '.join(aligned)} ~ {from_domain}"))
    elif having("dkim", "fail", "permerror"):
        reasons.append(_reason("DKIM-"))

    if having("spf", "pass"):
        reasons.append(_reason("SPF+", ", ".join(sorted(set(having("spf", "pass"))))))
    elif having("spf", "fail"):
        reasons.append(_reason("SPF-", ", ".join(sorted(set(having("spf", "fail"))))))
    elif having("spf", "softfail"):
        reasons.append(_reason("SPF~"))

    if not dmarc_pass and having("arc", "pass"):
        reasons.append(_reason("ARC+"))

    if not reasons:
        detail = "no Authentication-Results believed" if not results else "no pass or fail result"
        reasons.append(_reason("NOAR", detail))
    if ev.ignored_auth_fields:
        reasons.append(_reason("ARIGN", f"{ev.ignored_auth_fields} field(s)"))
    return reasons


def _protection(features: MessageFeatures) -> list[Reason]:
    detail = features.content_type or "no Content-Type"
    return [_reason(_PROTECTION_CODES[features.protection], detail)]


def _correspondents(features: MessageFeatures, policy: Policy, authenticated: bool) -> list[Reason]:
    reasons: list[Reason] = []
    senders = sorted(set(features.from_addresses))
    if len(senders) != 1:
        reasons.append(_reason("NOFROM", f"{len(senders)} From addresses"))
    elif not policy.is_known(senders[0]):
        reasons.append(_reason("FROMU", senders[0]))
    elif authenticated:
        reasons.append(_reason("FROMKV", senders[0]))
    else:
        reasons.append(_reason("FROMK", senders[0]))

    recipients = sorted(set(features.recipients))
    known = sum(1 for r in recipients if policy.is_known(r))
    if not recipients:
        reasons.append(_reason("NORCPT"))
    elif known == len(recipients):
        reasons.append(_reason("RCPTK", f"{known} of {len(recipients)}"))
    elif known:
        reasons.append(_reason("RCPTS", f"{known} of {len(recipients)}"))
    else:
        reasons.append(_reason("RCPTU", f"0 of {len(recipients)}"))
    return reasons


def _axis(axis: Axis, reasons: list[Reason]) -> AxisScore:
    score = min(100, max(0, sum(r.points for r in reasons)))
    return AxisScore(axis, score, tuple(reasons))


def privacy_index(features: MessageFeatures, policy: Policy) -> PrivacyIndex:
    """Score ``features`` under ``policy``."""
    ev = gather_evidence(features, policy)
    authenticity = _authenticity(features, ev)
    # A known sender counts as verified only when the From domain itself was authenticated.
    verified = any(r.code in ("AUTHSUB", "DMARC+", "DKIMA") for r in authenticity)
    axes = (
        _axis(Axis.TRANSPORT, _transport(ev)),
        _axis(Axis.AUTHENTICITY, authenticity),
        _axis(Axis.PROTECTION, _protection(features)),
        _axis(Axis.CORRESPONDENTS, _correspondents(features, policy, verified)),
    )
    aggregate = aggregate_of({a.axis: a.score for a in axes})
    return PrivacyIndex(INDEX_VERSION, axes, aggregate, grade_of(aggregate), ev)
