"""The privacy index v1 scoring table: axes, weights, grades and every reason code with its points.

This table is the one place the numbers live; ``index.py`` only looks codes up here, and
docs/privacy-index.md documents the same table (a test compares them). Changing a number or a
code's meaning is a new index version.

Pure module: standard library only; no IO, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

INDEX_VERSION = 1


class Axis(StrEnum):
    """The four axes of the privacy index, each scored 0–100."""

    TRANSPORT = "transport"
    AUTHENTICITY = "authenticity"
    PROTECTION = "protection"
    CORRESPONDENTS = "correspondents"

    @property
    def key(self) -> str:
        """The one-letter key used for this axis in the privacy header."""
        return _AXIS_KEYS[self]


_AXIS_KEYS = {
    Axis.TRANSPORT: "t",
    Axis.AUTHENTICITY: "a",
    Axis.PROTECTION: "p",
    Axis.CORRESPONDENTS: "c",
}

#: Weights of the aggregate, in percent; they sum to 100.
AXIS_WEIGHTS: Mapping[Axis, int] = MappingProxyType(
    {
        Axis.TRANSPORT: 30,
        Axis.AUTHENTICITY: 30,
        Axis.PROTECTION: 25,
        Axis.CORRESPONDENTS: 15,
    }
)

#: Lowest aggregate that earns each grade, best grade first.
GRADE_FLOORS: tuple[tuple[str, int], ...] = (("A", 80), ("B", 60), ("C", 40), ("D", 20), ("E", 0))
GRADES: tuple[str, ...] = tuple(grade for grade, _ in GRADE_FLOORS)


@dataclass(frozen=True)
class ReasonSpec:
    """One row of the table.

    ``slot`` groups codes of which at most one can be given to a message (the hop's TLS version,
    the DMARC result…); the privacy header's constant length is sized from it. A ``note`` records
    a claim that was set aside: ``explain`` shows it, the privacy header does not carry it, so a
    forged claim leaves the injected header byte for byte unchanged.
    """

    code: str
    axis: Axis
    slot: str
    points: int
    meaning: str
    note: bool = False


_T, _A, _P, _C = Axis.TRANSPORT, Axis.AUTHENTICITY, Axis.PROTECTION, Axis.CORRESPONDENTS

_TABLE = (
    # Transport: the boundary hop is where a trusted relay received the message from outside.
    ReasonSpec("TLS13", _T, "hop", 100, "boundary hop used TLS 1.3"),
    ReasonSpec("TLS12", _T, "hop", 80, "boundary hop used TLS 1.2"),
    ReasonSpec("TLS11", _T, "hop", 40, "boundary hop used TLS 1.1"),
    ReasonSpec("TLS10", _T, "hop", 30, "boundary hop used TLS 1.0"),
    ReasonSpec("SSL3", _T, "hop", 10, "boundary hop used SSL 3 or older"),
    ReasonSpec("TLS", _T, "hop", 60, "boundary hop used TLS of unstated version (e.g. ESMTPS)"),
    ReasonSpec("PLAIN", _T, "hop", 0, "boundary hop was not encrypted"),
    ReasonSpec("LOCAL", _T, "hop", 100, "message originated inside the trusted relays"),
    ReasonSpec("NOHOP", _T, "hop", 0, "no Received hop can be believed"),
    ReasonSpec(
        "INCLR", _T, "internal", -20, "a hop between trusted relays crossed a network in clear"
    ),
    ReasonSpec(
        "XHOP", _T, "outside", 0, "hops below the boundary were counted, never believed", note=True
    ),
    # Authenticity: only Authentication-Results from a trusted authserv-id above the boundary.
    ReasonSpec("AUTHSUB", _A, "submission", 100, "authenticated submission to a trusted relay"),
    ReasonSpec("DMARC+", _A, "dmarc", 40, "DMARC pass for the From domain"),
    ReasonSpec("DMARC-", _A, "dmarc", -40, "DMARC fail"),
    ReasonSpec("DKIM+", _A, "dkim", 25, "a DKIM signature verified"),
    ReasonSpec("DKIM-", _A, "dkim", -10, "DKIM failed and no signature verified"),
    ReasonSpec("DKIMA", _A, "align", 15, "a verified DKIM signature is aligned with From"),
    ReasonSpec("SPF+", _A, "spf", 20, "SPF pass"),
    ReasonSpec("SPF~", _A, "spf", -5, "SPF softfail"),
    ReasonSpec("SPF-", _A, "spf", -20, "SPF fail"),
    ReasonSpec("ARC+", _A, "arc", 10, "ARC chain passed (counted only without DMARC pass)"),
    ReasonSpec("NOAR", _A, "none", 0, "no trusted authentication result"),
    ReasonSpec(
        "ARIGN",
        _A,
        "ignored",
        0,
        "untrusted or misplaced Authentication-Results ignored",
        note=True,
    ),
    # Protection: what the message's own MIME structure (or inline armour) declares.
    ReasonSpec("PGPENC", _P, "content", 100, "PGP/MIME encrypted"),
    ReasonSpec("SMIMEENC", _P, "content", 100, "S/MIME enveloped (encrypted)"),
    ReasonSpec("PGPINL", _P, "content", 90, "inline PGP encrypted"),
    ReasonSpec("PGPSIG", _P, "content", 50, "PGP/MIME signed (signature not verified)"),
    ReasonSpec("SMIMESIG", _P, "content", 50, "S/MIME signed (signature not verified)"),
    ReasonSpec("PGPINLSIG", _P, "content", 40, "inline PGP signed (signature not verified)"),
    ReasonSpec("NOE2E", _P, "content", 0, "no end-to-end protection"),
    # Correspondents: the policy's known_correspondents list.
    ReasonSpec("FROMKV", _C, "sender", 60, "sender known and authenticated"),
    ReasonSpec("FROMK", _C, "sender", 30, "sender known but not authenticated"),
    ReasonSpec("FROMU", _C, "sender", 0, "sender unknown"),
    ReasonSpec("NOFROM", _C, "sender", 0, "no single From address"),
    ReasonSpec("RCPTK", _C, "recipients", 40, "every recipient known"),
    ReasonSpec("RCPTS", _C, "recipients", 20, "some recipients known"),
    ReasonSpec("RCPTU", _C, "recipients", 0, "no recipient known"),
    ReasonSpec("NORCPT", _C, "recipients", 0, "no To, Cc or Bcc address"),
)

REASONS: Mapping[str, ReasonSpec] = MappingProxyType({spec.code: spec for spec in _TABLE})


def aggregate_of(scores: Mapping[Axis, int]) -> int:
    """Weighted mean of the axis scores, rounded half up, 0–100."""
    total = sum(AXIS_WEIGHTS[axis] * scores[axis] for axis in Axis)
    return (total + 50) // 100


def grade_of(aggregate: int) -> str:
    """The A–E grade of an aggregate."""
    for grade, floor in GRADE_FLOORS:
        if aggregate >= floor:
            return grade
    return GRADES[-1]
