"""Mail addresses: pulling addr-specs out of address-list headers, normalising them, and matching
them against the address and domain globs a policy is written with.

Normalised form (the only form features and policies compare): local part lower-cased, domain
lower-cased without a trailing dot and converted to IDNA A-labels, so ``Alice@Bücher.DE`` and
``alice@xn--bcher-kva.de`` are the same correspondent.

Pure module: standard library only; no IO, no logging. Never raises on header input.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from caliproxy.errors import PolicyError

# RFC 5322 §3.4: address-list = (address *("," address)); address = mailbox / group;
# mailbox = name-addr / addr-spec; name-addr = [display-name] "<" addr-spec ">";
# group = display-name ":" [group-list] ";".  Display names may hold commas and "@" inside
# quoted-strings and comments, so those are blanked first; what is left splits on commas.
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_INNER_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_ANGLE_ADDR = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s")
# Comments nest (RFC 5322 §3.2.2); a few passes of innermost-first removal cover real mail,
# and the bound keeps hostile input linear.
_COMMENT_PASSES = 4


def _strip_comments(text: str) -> str:
    for _ in range(_COMMENT_PASSES):
        if "(" not in text:
            break
        text, removed = _INNER_COMMENT.subn(" ", text)
        if not removed:
            break
    return text


def normalise_domain(domain: str) -> str:
    """Lower-case, drop a trailing dot, and turn Unicode labels into IDNA A-labels.

    A domain the IDNA codec refuses (empty or over-long labels) is kept lower-cased: it can
    still be compared, it just cannot match a well-formed pattern by accident.
    """
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def normalise_address(address: str) -> str | None:
    """Return the normalised ``local@domain`` form, or None when ``address`` is not an addr-spec."""
    address = address.strip()
    if address.lower().startswith("mailto:"):
        address = address[len("mailto:") :].split("?", 1)[0]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or _WHITESPACE.search(address):
        return None
    domain = normalise_domain(domain)
    if not domain:
        return None
    return f"{local.lower()}@{domain}"


def parse_address_list(value: str) -> tuple[str, ...]:
    """All addresses in an address-list header value, normalised, in order, duplicates kept.

    Group syntax, route syntax and display names are dropped; an entry that is not an
    addr-spec is skipped rather than guessed at.
    """
    text = _strip_comments(_QUOTED_STRING.sub(" ", value))
    found: list[str] = []
    for piece in text.split(","):
        angle = _ANGLE_ADDR.search(piece)
        candidate = angle.group(1) if angle else piece
        # "group: a@b" (RFC 5322 §3.4) and obs-route "<@relay:a@b>" (§4.4) keep what follows ":".
        if ":" in candidate and not candidate.lower().startswith("mailto:"):
            candidate = candidate.rsplit(":", 1)[1]
        candidate = candidate.strip().strip(";").strip()
        normalised = normalise_address(candidate)
        if normalised is not None:
            found.append(normalised)
    return tuple(found)


def domain_of(address: str) -> str:
    """The domain of a normalised address."""
    return address.rpartition("@")[2]


def _compile_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def _normalise_domain_glob(pattern: str) -> str:
    # Labels holding wildcards cannot be IDNA-encoded; the others are, so a pattern written with
    # Unicode matches addresses that arrived as A-labels.
    return ".".join(
        label if any(c in label for c in "*?[") else normalise_domain(label)
        for label in pattern.strip().rstrip(".").lower().split(".")
    )


@dataclass(frozen=True)
class AddressPattern:
    """An address or domain glob from the policy.

    With an ``@`` the glob is matched against the whole normalised address (``*@example.org``,
    ``alice@*.example.org``); without one it is matched against the address's domain only
    (``example.org``, ``*.example.org`` — the latter does not match ``example.org`` itself).
    Matching is case-insensitive; ``*`` ``?`` ``[...]`` are shell-style wildcards.
    """

    text: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _whole_address: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = self.text.strip()
        if not text or _WHITESPACE.search(text):
            raise PolicyError(f"invalid address pattern {self.text!r}")
        local, at, domain = text.rpartition("@")
        if at and not local:
            raise PolicyError(
                f"invalid address pattern {self.text!r}: write '*@domain' or just 'domain'"
            )
        if at:
            normalised = f"{local.lower()}@{_normalise_domain_glob(domain)}"
        else:
            normalised = _normalise_domain_glob(text)
        object.__setattr__(self, "_regex", _compile_glob(normalised))
        object.__setattr__(self, "_whole_address", bool(at))

    def matches(self, address: str) -> bool:
        """True when the normalised ``address`` matches this pattern."""
        subject = address if self._whole_address else domain_of(address)
        return self._regex.match(subject) is not None


@dataclass(frozen=True)
class GlobPattern:
    """A shell-style glob over a name (folder, account, host, list id)."""

    text: str
    case_sensitive: bool = False
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.text:
            raise PolicyError("empty glob pattern")
        text = self.text if self.case_sensitive else self.text.lower()
        object.__setattr__(self, "_regex", _compile_glob(text))

    def matches(self, name: str) -> bool:
        subject = name if self.case_sensitive else name.lower()
        return self._regex.match(subject) is not None
