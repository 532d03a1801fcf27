"""Deciding which of a message's claims to believe: the trusted boundary in its ``Received`` chain,
the ``Authentication-Results`` and spam verdicts written above it, and what was set aside.

The rule (RFC 8601 §5): walking down from the newest hop, a ``Received`` field is
believed while it was written by a trusted relay. The newest one must be *by* a trusted relay;
each next one is believed only if the hop above it received the message *from* a trusted relay
(by address, or by the reverse-DNS name the trusted relay looked up — never by HELO). The lowest
believed hop is the *boundary*: where the user's own chain took the message from the outside.
Everything below it was written by strangers and is only counted. An ``Authentication-Results``
or spam header counts only when it stands above the boundary (added inside the chain) and, for
``Authentication-Results``, names an authserv-id the policy trusts.

Pure module: standard library only plus ``caliproxy.privacy.*``; no IO, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass

from caliproxy.privacy.authres import MethodResult
from caliproxy.privacy.features import MessageFeatures
from caliproxy.privacy.policy import Policy, TrustedRelays, parse_ip
from caliproxy.privacy.received import ReceivedHop, TlsVersion


@dataclass(frozen=True)
class Evidence:
    """What the policy lets us believe about one message."""

    #: The lowest hop written by a trusted relay; None when no hop can be believed.
    boundary: ReceivedHop | None
    #: The trusted chain reaches the message's origin (local pickup, webmail on loopback…).
    local_origin: bool
    #: Why no hop is believed; empty when ``boundary`` is set.
    untrusted_because: str
    #: Hops written by trusted relays, boundary included.
    trusted_hops: int
    #: Hops between trusted relays that crossed a network without TLS.
    internal_cleartext_hops: int
    #: Hops below the boundary, and how many of them claim TLS (claims only).
    outside_hops: int
    outside_tls_claims: int
    #: Results from believed Authentication-Results fields, top to bottom.
    auth_results: tuple[MethodResult, ...]
    #: Positions of the believed Authentication-Results fields.
    believed_auth_positions: tuple[int, ...]
    #: Authentication-Results fields set aside (untrusted authserv-id, or below the boundary).
    ignored_auth_fields: int
    #: True/False from believed spam headers; None when no believed spam header exists.
    spam: bool | None
    spam_score: float | None


def _peer_trusted(hop: ReceivedHop, relays: TrustedRelays) -> bool | None:
    """Whether the peer a trusted relay received from is itself trusted; None when no peer."""
    if hop.from_ip:
        return relays.address_trusted(hop.from_ip) or relays.host_trusted(hop.from_rdns)
    if hop.from_host:
        # No address recorded: a unix-socket hand-over (LMTP, a content filter) between relays.
        return relays.host_trusted(hop.from_host)
    return None


def gather_evidence(features: MessageFeatures, policy: Policy) -> Evidence:
    """Walk the message's claims under ``policy`` and keep only what may be believed."""
    relays = policy.trusted_relays
    hops = features.received
    boundary_index: int | None = None
    local_origin = False
    internal_cleartext = 0
    untrusted_because = ""

    if not relays.configured:
        untrusted_because = "no trusted relays are configured"
    elif not hops:
        untrusted_because = "no Received field"
    elif not relays.host_trusted(hops[0].by_host):
        untrusted_because = f"newest Received is by {hops[0].by_host or '?'}, not a trusted relay"
    else:
        for i, hop in enumerate(hops):
            last = i == len(hops) - 1
            peer = _peer_trusted(hop, relays)
            if peer is None:
                if last:
                    # A local pickup ("by mx (Postfix, from userid 1000)"): the chain's origin.
                    boundary_index, local_origin = i, True
                    break
                # A relay handing the message to itself (Gmail's "by 2002:a05:… with SMTP"): the
                # hop below is believed only if it too is by a trusted relay.
                if not relays.host_trusted(hops[i + 1].by_host):
                    boundary_index = i
                    break
                continue
            if not peer:
                boundary_index = i
                break
            if last:
                # A trusted peer with nothing older: the message started inside the chain.
                boundary_index, local_origin = i, True
                break
            if hop.tls is TlsVersion.NONE and hop.from_ip and not _loopback(hop.from_ip):
                internal_cleartext += 1

    # With trusted relays and a trusted newest hop the walk always ends on a boundary.
    if boundary_index is None:
        boundary = None
        outside = hops
        trusted_hops = 0
    else:
        boundary = hops[boundary_index]
        outside = hops[boundary_index + 1 :]
        trusted_hops = boundary_index + 1

    believed: list[MethodResult] = []
    believed_positions: list[int] = []
    ignored = 0
    for field in features.auth_results:
        if (
            boundary is not None
            and field.position < boundary.position
            and policy.trusts_authserv_id(field.authserv_id)
        ):
            believed.extend(field.results)
            believed_positions.append(field.position)
        else:
            ignored += 1

    spam: bool | None = None
    spam_score: float | None = None
    if boundary is not None:
        for spam_field in features.spam:
            if spam_field.position >= boundary.position:
                continue
            if spam_field.score is not None:
                spam_score = (
                    max(spam_field.score, spam_score)
                    if spam_score is not None
                    else spam_field.score
                )
            says_spam = bool(spam_field.flag) or (
                spam_field.score is not None and spam_field.score >= policy.spam_threshold
            )
            spam = says_spam or bool(spam)

    return Evidence(
        boundary=boundary,
        local_origin=local_origin,
        untrusted_because=untrusted_because,
        trusted_hops=trusted_hops,
        internal_cleartext_hops=internal_cleartext,
        outside_hops=len(outside),
        outside_tls_claims=sum(1 for h in outside if h.tls is not TlsVersion.NONE),
        auth_results=tuple(believed),
        believed_auth_positions=tuple(believed_positions),
        ignored_auth_fields=ignored,
        spam=spam,
        spam_score=spam_score,
    )


def _loopback(address: str) -> bool:
    ip = parse_ip(address)
    return ip is not None and ip.is_loopback
