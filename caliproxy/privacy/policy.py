"""The privacy policy as frozen objects: the level scale and default, the trusted relays and
authserv-ids, known correspondents, the spam threshold, and the confidentiality rules.

``caliproxy.policy_config`` builds these from YAML; tests and other callers may build them
directly. Invariants are checked here (raising ``PolicyError``) so that no invalid policy can
reach the engine whoever built it.

Pure module: standard library only plus ``caliproxy.errors`` and ``caliproxy.privacy.*``; no IO,
no YAML, no logging.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

from caliproxy.errors import PolicyError
from caliproxy.privacy.addresses import AddressPattern, GlobPattern, normalise_domain
from caliproxy.privacy.features import FEATURES_VERSION, SENSITIVITY_VALUES, MessageFeatures
from caliproxy.privacy.levels import LevelScale
from caliproxy.privacy.scoring import GRADES, Axis

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Level names travel in the constant-length privacy header, so their length and alphabet are bounded.
MAX_LEVEL_NAME_LENGTH = 24
_LEVEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Index conditions may test the aggregate or any axis.
INDEX_TARGETS: tuple[str, ...] = ("aggregate",) + tuple(axis.value for axis in Axis)


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text``, or None. Cached: a mailbox's hops name the same few relays."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def check_level_names(levels: LevelScale) -> None:
    """PolicyError unless every level name fits the privacy header."""
    for name in levels.names:
        if len(name) > MAX_LEVEL_NAME_LENGTH or not _LEVEL_NAME.match(name):
            raise PolicyError(
                f"level name {name!r} must be 1-{MAX_LEVEL_NAME_LENGTH} characters of "
                "letters, digits, '_', '.', '-' (starting with a letter or digit)"
            )


@dataclass(frozen=True)
class TrustedRelays:
    """The user's own MX chain: relays whose ``Received`` lines are believed.

    ``hosts`` are host-name globs (matched against the ``by`` host of the newest hop and the
    reverse-DNS name a trusted relay recorded for its peer); ``networks`` are the relays'
    addresses. Loopback peers are always trusted: a trusted relay that received a message from
    itself (a content filter re-injecting, a local pickup) is still inside the chain.
    """

    hosts: tuple[GlobPattern, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, hosts: tuple[str, ...] = (), networks: tuple[str, ...] = ()) -> TrustedRelays:
        """Build from plain strings; PolicyError on an invalid network."""
        try:
            nets = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
        return cls(tuple(GlobPattern(normalise_domain(h)) for h in hosts), nets)

    @property
    def configured(self) -> bool:
        return bool(self.hosts or self.networks)

    def host_trusted(self, name: str) -> bool:
        if not name:
            return False
        if any(glob.matches(name) for glob in self.hosts):
            return True
        return self.address_trusted(name.strip("[]"))

    def address_trusted(self, address: str) -> bool:
        ip = parse_ip(address)
        if ip is None:
            return False
        return ip.is_loopback or any(ip in net for net in self.networks)


@dataclass(frozen=True)
class IndexRange:
    """``target`` (``aggregate`` or an axis name) must lie in ``[minimum, maximum]``."""

    target: str
    minimum: int = 0
    maximum: int = 100

    def __post_init__(self) -> None:
        if self.target not in INDEX_TARGETS:
            raise PolicyError(
                f"unknown index target {self.target!r}; known: {', '.join(INDEX_TARGETS)}"
            )
        if not 0 <= self.minimum <= self.maximum <= 100:
            raise PolicyError(f"index range for {self.target} must satisfy 0 <= min <= max <= 100")


@dataclass(frozen=True)
class HeaderPattern:
    """A regular expression searched in the decoded, unfolded values of one header field."""

    name: str
    regex: re.Pattern[str]

    @classmethod
    def of(cls, name: str, regex: str) -> HeaderPattern:
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise PolicyError(f"invalid regular expression {regex!r}: {exc}") from None
        return cls(name.lower(), compiled)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[!-9;-~]+", self.name):
            raise PolicyError(f"invalid header name {self.name!r}")


@dataclass(frozen=True)
class Match:
    """The conditions of one rule: every condition given must hold; a list holds if any item does.

    ``sender`` is tested against From and Sender addresses, ``recipient`` against To, Cc and Bcc;
    a message with several addresses matches when any of them does (so a rule that raises the
    level cannot be dodged by adding a harmless address).
    """

    sender: tuple[AddressPattern, ...] = ()
    recipient: tuple[AddressPattern, ...] = ()
    mailing_list: tuple[GlobPattern, ...] = ()
    folder: tuple[GlobPattern, ...] = ()
    account: tuple[GlobPattern, ...] = ()
    sensitivity: tuple[str, ...] = ()
    encrypted: bool | None = None
    signed: bool | None = None
    spam: bool | None = None
    index: tuple[IndexRange, ...] = ()
    grade: tuple[str, ...] = ()
    header: HeaderPattern | None = None

    def __post_init__(self) -> None:
        given = (
            self.sender,
            self.recipient,
            self.mailing_list,
            self.folder,
            self.account,
            self.sensitivity,
            self.index,
            self.grade,
        )
        flags = (self.encrypted, self.signed, self.spam, self.header)
        if not any(given) and all(flag is None for flag in flags):
            raise PolicyError("a rule needs at least one condition")
        for value in self.sensitivity:
            if value not in SENSITIVITY_VALUES:
                raise PolicyError(
                    f"unknown sensitivity {value!r}; known: {', '.join(sorted(SENSITIVITY_VALUES))}"
                )
        for grade in self.grade:
            if grade not in GRADES:
                raise PolicyError(f"unknown grade {grade!r}; known: {', '.join(GRADES)}")


@dataclass(frozen=True)
class Rule:
    """A named rule: when ``match`` holds it fires and proposes ``level``.

    A message takes the highest level proposed by the rules that fire, else the policy default.
    """

    name: str
    level: str
    match: Match


@dataclass(frozen=True)
class Policy:
    """Everything the privacy engine needs to judge a message."""

    levels: LevelScale = field(default_factory=LevelScale)
    default_level: str = "internal"
    trusted_relays: TrustedRelays = field(default_factory=TrustedRelays)
    authserv_ids: tuple[str, ...] = ()
    known_correspondents: tuple[AddressPattern, ...] = ()
    spam_threshold: float = 5.0
    rules: tuple[Rule, ...] = ()
    _authserv_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    _header_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_level_names(self.levels)
        self.levels.rank(self.default_level)
        for rule in self.rules:
            if rule.level not in self.levels:
                raise PolicyError(
                    f"rule {rule.name!r}: unknown level {rule.level!r}; known: {', '.join(self.levels.names)}"
                )
        # RFC 8601 §2.5: authserv-ids are compared case-insensitively.
        object.__setattr__(
            self, "_authserv_ids", frozenset(i.lower().rstrip(".") for i in self.authserv_ids)
        )
        object.__setattr__(
            self,
            "_header_names",
            frozenset(r.match.header.name for r in self.rules if r.match.header is not None),
        )

    def trusts_authserv_id(self, authserv_id: str) -> bool:
        return authserv_id.lower() in self._authserv_ids

    @property
    def header_names(self) -> frozenset[str]:
        """Header fields whose values rules read; pass them as ``MessageContext.keep_headers``."""
        return self._header_names

    def can_judge(self, features: MessageFeatures) -> bool:
        """True when ``features`` (say, from a cache) carry everything this policy reads: the current
        extraction version and the value of every header a rule tests. Otherwise extract again."""
        return (
            features.version == FEATURES_VERSION
            and self._header_names <= features.kept_header_names
        )

    def is_known(self, address: str) -> bool:
        return any(pattern.matches(address) for pattern in self.known_correspondents)
