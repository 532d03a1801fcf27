"""The privacy header we inject into every message, its parser, and the neutralising of any header
of our name already present.

Format (one unfolded line, ``HEADER_LENGTH`` bytes including CRLF, padded with spaces before the
CRLF so every message grows by the same number of bytes whatever its verdict)::

    X-Caliproxy-Privacy: v=1; level=confidential; pi=72; grade=B; t=80; a=100; p=0; c=60;
        r=TLS12 DMARC+ DKIM+ DKIMA SPF+ NOE2E FROMKV RCPTK;<spaces>CRLF

(shown folded here; rendered on one line). ``pi`` is the aggregate, ``t a p c`` the transport,
authenticity, protection and correspondents axes, ``r`` the reason codes of docs/privacy-index.md
(notes about claims set aside are left out, so forged claims do not change the header).
Every key ends with ``;`` so a mail filter can test "contains ``level=secret;``".

Pure module: standard library only plus ``caliproxy.errors`` and ``caliproxy.privacy.*``; no IO.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from caliproxy.errors import PolicyError
from caliproxy.privacy.features import PRIVACY_HEADER_NAME
from caliproxy.privacy.header_fields import header_bounds
from caliproxy.privacy.policy import MAX_LEVEL_NAME_LENGTH
from caliproxy.privacy.scoring import GRADES, INDEX_VERSION, REASONS, Axis
from caliproxy.privacy.verdict import Verdict

#: The field name used unless the configuration names another (``header.name``).
HEADER_NAME = "X-Caliproxy-Privacy"
#: Bytes of the rendered field including its CRLF. Part of the v1 format: changing it changes
#: every message size a client has cached. It does not depend on the name.
HEADER_LENGTH = 256
#: Replaces the end of our name to make the same-length name an existing header of ours is
#: renamed to, so sizes stay computable: ``X-Caliproxy-Privacy`` -> ``X-Caliproxy-Spoofed``.
SPOOFED_SUFFIX = "-Spoofed"
SPOOFED_NAME = HEADER_NAME[: -len(SPOOFED_SUFFIX)] + SPOOFED_SUFFIX

assert HEADER_NAME.lower() == PRIVACY_HEADER_NAME
assert len(SPOOFED_NAME) == len(HEADER_NAME)

# A name must go unquoted into IMAP header lists (an atom) and be an RFC 5322 field name.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
# Fields mail software and the privacy engine read: renaming copies of them would break mail.
_RESERVED = frozenset({
    "arc-authentication-results", "arc-message-signature", "arc-seal", "authentication-results",
    "content-description", "content-disposition", "content-transfer-encoding", "content-type",
    "dkim-signature", "in-reply-to", "list-unsubscribe", "list-unsubscribe-post", "message-id",
    "mime-version", "received-spf", "references", "resent-date", "resent-from", "resent-message-id",
    "resent-sender", "return-path", "sensitivity", "x-spam-flag", "x-spam-level", "x-spam-score",
    "x-spam-status",
})


class PrivacyHeaderError(PolicyError):
    """A privacy header could not be parsed (or, never expected, rendered within its length)."""


@dataclass(frozen=True)
class HeaderName:
    """Our field's name and the same-length name any copy already in a message is renamed to.

    Raises PrivacyHeaderError for a name that cannot work: not an atom-safe field name, one
    that renaming would confuse with its spoofed form, a field mail software relies on, or too
    long for the longest verdict to fit in ``HEADER_LENGTH`` bytes.
    """

    name: str = HEADER_NAME

    def __post_init__(self) -> None:
        name = self.name
        if not _NAME.match(name):
            raise PrivacyHeaderError(f"header name {name!r} must be letters, digits and '-', "
                                     "starting with a letter")
        if not len(SPOOFED_SUFFIX) + 2 <= len(name) <= MAX_NAME_LENGTH:
            raise PrivacyHeaderError(f"header name {name!r} must be {len(SPOOFED_SUFFIX) + 2}-"
                                     f"{MAX_NAME_LENGTH} characters long")
        if name.lower().endswith(SPOOFED_SUFFIX.lower()):
            raise PrivacyHeaderError(f"header name {name!r} must not end in {SPOOFED_SUFFIX!r} "
                                     "(that is how copies of it are renamed)")
        if name.lower() in _RESERVED:
            raise PrivacyHeaderError(f"header name {name!r} is a field mail software relies on")

    @property
    def spoofed(self) -> str:
        return self.name[: -len(SPOOFED_SUFFIX)] + SPOOFED_SUFFIX

    @property
    def lower(self) -> str:
        return self.name.lower()

    @functools.cached_property
    def _ours(self) -> re.Pattern[bytes]:
        # A field of our name starts a line (never a continuation line, which starts with WSP);
        # RFC 5322 §4.5 obs-optional allows WSP before the colon.
        return re.compile(rb"^" + re.escape(self.name.encode("ascii")) + rb"(?=[ \t]*:)",
                          re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class PrivacyHeader:
    """What the header carries: a summary of a ``Verdict``."""

    version: int
    level: str
    aggregate: int
    grade: str
    #: (axis name, score) in the index's axis order.
    axes: tuple[tuple[str, int], ...]
    reasons: tuple[str, ...]

    @classmethod
    def of(cls, verdict: Verdict) -> PrivacyHeader:
        index = verdict.index
        return cls(
            version=index.version,
            level=verdict.level.level,
            aggregate=index.aggregate,
            grade=index.grade,
            axes=tuple((a.axis.value, a.score) for a in index.axes),
            reasons=tuple(r.code for r in index.reasons if not REASONS[r.code].note),
        )

    def axis(self, name: str) -> int:
        return dict(self.axes)[name]


def _value(summary: PrivacyHeader) -> str:
    axes = " ".join(f"{Axis(name).key}={score};" for name, score in summary.axes)
    return (f"v={summary.version}; level={summary.level}; pi={summary.aggregate}; "
            f"grade={summary.grade}; {axes} r={' '.join(summary.reasons)};")


def longest_possible() -> PrivacyHeader:
    """The longest header v1 can render: the longest level name, every score three digits, and
    the longest reason code of every slot (two codes of one slot never apply together)."""
    longest_by_slot: dict[str, str] = {}
    for spec in REASONS.values():
        if not spec.note and len(spec.code) > len(longest_by_slot.get(spec.slot, "")):
            longest_by_slot[spec.slot] = spec.code
    return PrivacyHeader(
        version=INDEX_VERSION,
        level="x" * MAX_LEVEL_NAME_LENGTH,
        aggregate=100,
        grade=GRADES[0],
        axes=tuple((axis.value, 100) for axis in Axis),
        reasons=tuple(longest_by_slot.values()),
    )


#: The longest name with which every verdict still fits (name, ": ", value, CRLF).
MAX_NAME_LENGTH = HEADER_LENGTH - 2 - len(": ") - len(_value(longest_possible()))
#: The default name, as a ``HeaderName``.
DEFAULT_HEADER = HeaderName()


def render_header(verdict: Verdict | PrivacyHeader, name: HeaderName | None = None) -> bytes:
    """The full header field, exactly ``HEADER_LENGTH`` bytes, ending in CRLF."""
    summary = verdict if isinstance(verdict, PrivacyHeader) else PrivacyHeader.of(verdict)
    line = f"{(name or DEFAULT_HEADER).name}: {_value(summary)}".encode("ascii")
    padding = HEADER_LENGTH - 2 - len(line)
    if padding < 0:
        # Level names and the reason table are bounded so that this cannot happen; a test
        # renders the longest possible verdict.
        raise PrivacyHeaderError(f"privacy header overflows {HEADER_LENGTH} bytes")
    return line + b" " * padding + b"\r\n"


def render_unclassified(level: str, name: HeaderName | None = None) -> bytes:
    """The header for a message that could not be judged, ``HEADER_LENGTH`` bytes.

    ``level`` is the level it is treated as (the caller's fail-closed choice, normally the
    highest). ``parse_header`` refuses it: it carries no verdict.
    """
    if not _LEVEL.match(level):
        raise PrivacyHeaderError(f"invalid level {level!r}")
    line = f"{(name or DEFAULT_HEADER).name}: v={INDEX_VERSION}; level={level}; unclassified;".encode("ascii")
    return line + b" " * (HEADER_LENGTH - 2 - len(line)) + b"\r\n"


# One "key=value;" pair; values never contain ";".
_PAIR = re.compile(r"\s*([a-z]+)=([^;]*);")
_LEVEL = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_LEVEL_NAME_LENGTH - 1}}}$")
_SCORE = re.compile(r"^(?:100|[1-9]?[0-9])$")
_AXIS_BY_KEY = {axis.key: axis for axis in Axis}


def parse_header(data: bytes, name: HeaderName | None = None) -> PrivacyHeader:
    """Parse a rendered header field (or just its value); PrivacyHeaderError if it is not one."""
    ours = name or DEFAULT_HEADER
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PrivacyHeaderError("privacy header is not ASCII") from None
    text = text.replace("\r\n", "").replace("\n", "").strip()
    field, colon, value = text.partition(":")
    if colon and "=" not in field:
        if field.strip().lower() != ours.lower:
            raise PrivacyHeaderError(f"not a {ours.name} field: {field.strip()!r}")
        text = value
    pairs: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            raise PrivacyHeaderError(
                f"malformed privacy header near {text[position : position + 20]!r}"
            )
        key, val = match.group(1), match.group(2).strip()
        if key in pairs:
            raise PrivacyHeaderError(f"duplicate key {key!r}")
        pairs[key] = val
        position = match.end()

    expected = {"v", "level", "pi", "grade", "r"} | set(_AXIS_BY_KEY)
    if set(pairs) != expected:
        raise PrivacyHeaderError(f"privacy header keys {sorted(pairs)} != {sorted(expected)}")
    if pairs["v"] != str(INDEX_VERSION):
        raise PrivacyHeaderError(f"unsupported privacy index version {pairs['v']!r}")
    if not _LEVEL.match(pairs["level"]):
        raise PrivacyHeaderError(f"invalid level {pairs['level']!r}")
    if pairs["grade"] not in GRADES:
        raise PrivacyHeaderError(f"invalid grade {pairs['grade']!r}")
    for key in ["pi", *_AXIS_BY_KEY]:
        if not _SCORE.match(pairs[key]):
            raise PrivacyHeaderError(f"invalid score {key}={pairs[key]!r}")
    reasons = tuple(pairs["r"].split())
    unknown = [code for code in reasons if code not in REASONS or REASONS[code].note]
    if unknown:
        raise PrivacyHeaderError(f"unknown reason codes {unknown}")
    return PrivacyHeader(
        version=INDEX_VERSION,
        level=pairs["level"],
        aggregate=int(pairs["pi"]),
        grade=pairs["grade"],
        axes=tuple((axis.value, int(pairs[key])) for key, axis in _AXIS_BY_KEY.items()),
        reasons=reasons,
    )


def neutralise_existing(header_block: bytes, name: HeaderName | None = None) -> bytes:
    """Rename every field of our name in the header block to its spoofed form, same length.

    Only the header block is touched (up to the first empty line; any body after it is kept
    byte for byte), folded continuation lines are kept as they are, and the result always has
    exactly the length of the input.
    """
    ours = name or DEFAULT_HEADER
    end, _ = header_bounds(header_block)
    head = header_block[:end]
    if ours._ours.search(head) is None:
        return header_block
    return ours._ours.sub(ours.spoofed.encode("ascii"), head) + header_block[end:]
