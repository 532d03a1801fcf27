"""Connection trust: what is known about one client connection, and the clearance it earns.

``clearance(facts, policy, now=...)`` walks the trust rules in order; the first rule whose every
condition holds gives the level, and when none does the connection gets the lowest level. Then the
client's self-declared IMAP ``ID`` (RFC 2971) is compared with the client-ID rules, which can only
ever *lower* the result: a client can claim any ID, so a claim must never buy more trust.

A client certificate counts as a device only while it is itself unexpired and, when it is in the
device registry, its registration is neither revoked nor expired. A revoked or expired registration
also disqualifies the certificate from "any certificate from the device CA" rules: that is how a
CA-issued certificate is revoked without reissuing the CA.

Every result carries its reasons, in order, for the audit log and ``caliproxy trust``. Strings that
came from the client (account, ID values) appear quoted and shortened, never raw.

Pure module: standard library plus ``caliproxy.errors`` and ``caliproxy.privacy.*``; no IO, no
clock (``now`` is a parameter), no logging, no YAML.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from caliproxy.errors import PolicyError
from caliproxy.privacy.addresses import GlobPattern
from caliproxy.privacy.levels import LevelScale

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: TLS protocol versions, oldest first; rules compare by position.
TLS_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3")

_TLS_VERSION = re.compile(r"^(?:tls)?\s*v?\s*(1\.[0-3])$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SHOWN = 64  # longest client-supplied string quoted in a reason


def parse_tls_version(text: str) -> str:
    """``"1.3"`` from ``"1.3"``, ``"TLSv1.3"``, ``"TLS1.3"`` or ``"tls 1.3"``; PolicyError otherwise."""
    found = _TLS_VERSION.match(text.strip())
    if found is None:
        raise PolicyError(f"unknown TLS version {text!r}; known: {', '.join(TLS_VERSIONS)}")
    return found.group(1)


def normalise_fingerprint(text: str) -> str:
    """The SHA-256 fingerprint as 64 lower-case hex digits.

    Accepts the usual spellings: ``sha256:`` prefix or not, colons or spaces between bytes
    (``openssl x509 -fingerprint -sha256`` prints ``SHA256 Fingerprint=AB:CD:…``).
    """
    value = text.strip()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        if value.lower().startswith(prefix):
            value = value[len(prefix):]
    value = re.sub(r"[\s:]", "", value).lower()
    if not _HEX64.match(value):
        raise PolicyError(
            f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        )
    return value


def _utc(moment: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _quote(value: str) -> str:
    """A client-supplied string made safe for one log line: repr, bounded."""
    shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
    return repr(shown)


def _shown_fingerprint(fingerprint: str) -> str:
    # The colon form openssl prints: recognisable, and no log filter mistakes it for base64.
    return "sha256:" + ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2))


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise PolicyError(
            f"{kind} name {name!r} must be letters, digits, '_', '.', '@', '+', '-' "
            "(starting with a letter or digit)"
        )


def _parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    result = []
    for text in networks:
        try:
            result.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise PolicyError(f"invalid network {text!r}: {exc}") from None
    return tuple(result)


def _client_ip(address: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; rules are written in IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# -- facts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionFacts:
    """Everything known about one client connection when its clearance is decided.

    ``client_address`` is the client's own address: the one the PROXY protocol header gave, when
    the listener takes it. ``cert_fingerprint`` is the SHA-256 of the client certificate's DER
    form (None: no certificate); ``chains_to_device_ca`` says whether it verified against the
    configured device CA during the handshake. ``client_id`` is what the client declared with
    IMAP ``ID`` (field names lower-cased), or None when it declared nothing.
    """

    listener: str
    client_address: str
    tls: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    cert_fingerprint: str | None = None
    chains_to_device_ca: bool = False
    cert_not_after: datetime | None = None
    account: str | None = None
    sasl_mechanism: str | None = None
    client_id: Mapping[str, str | None] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.tls_version is not None:
            try:
                object.__setattr__(self, "tls_version", parse_tls_version(self.tls_version))
            except PolicyError:
                pass  # an unknown version is kept as reported and satisfies no minimum
        if self.cert_fingerprint is not None:
            object.__setattr__(self, "cert_fingerprint", normalise_fingerprint(self.cert_fingerprint))
        if self.cert_not_after is not None:
            object.__setattr__(self, "cert_not_after", _utc(self.cert_not_after))
        if self.client_id is not None:
            declared = {str(k).lower(): (None if v is None else str(v)) for k, v in self.client_id.items()}
            object.__setattr__(self, "client_id", MappingProxyType(declared))

    @property
    def ip(self) -> IPAddress | None:
        """The client address as an IP address (IPv4-mapped IPv6 unwrapped), None if not one."""
        return _client_ip(self.client_address)


# -- the device registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A registered client certificate: a name for rules and logs, and its SHA-256 fingerprint.

    ``expires`` ends the registration (independently of the certificate's own expiry);
    ``revoked`` keeps the entry only to say the certificate must no longer be trusted.
    """

    name: str
    fingerprint: str
    expires: datetime | None = None
    revoked: bool = False

    def __post_init__(self) -> None:
        _check_name("device", self.name)
        object.__setattr__(self, "fingerprint", normalise_fingerprint(self.fingerprint))
        if self.expires is not None:
            object.__setattr__(self, "expires", _utc(self.expires))

    def problem(self, now: datetime) -> str | None:
        """Why this registration does not count at ``now``, or None when it does."""
        if self.revoked:
            return "is revoked"
        if self.expires is not None and self.expires <= _utc(now):
            return f"registration expired at {_when(self.expires)}"
        return None


# -- rules ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustRule:
    """One trust rule: when every condition given holds, the connection gets ``level``.

    Conditions (an empty tuple or None means "not tested"; a list holds when any item does):
    ``listeners`` names; ``tls`` True (TLS required) or False (only connections without TLS);
    ``tls_min`` the lowest acceptable TLS version (implies TLS); ``devices`` names of registered
    devices, or ``device_ca`` for any valid certificate that chains to the device CA;
    ``networks`` the client address's networks; ``accounts`` globs of the authenticated account.
    A rule without conditions matches every connection.
    """

    name: str
    level: str
    listeners: tuple[str, ...] = ()
    tls: bool | None = None
    tls_min: str | None = None
    devices: tuple[str, ...] = ()
    device_ca: bool = False
    networks: tuple[IPNetwork, ...] = ()
    accounts: tuple[GlobPattern, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise PolicyError("a trust rule needs a name")
        if self.tls_min is not None:
            object.__setattr__(self, "tls_min", parse_tls_version(self.tls_min))
            if self.tls is False:
                raise PolicyError(f"rule {self.name!r}: tls: false contradicts tls_min")
        if self.devices and self.device_ca:
            raise PolicyError(
                f"rule {self.name!r}: give device (registered names) or device_ca, not both"
            )

    @classmethod
    def of(
        cls,
        name: str,
        level: str,
        *,
        listeners: Iterable[str] = (),
        tls: bool | None = None,
        tls_min: str | None = None,
        devices: Iterable[str] = (),
        device_ca: bool = False,
        networks: Iterable[str] = (),
        accounts: Iterable[str] = (),
    ) -> TrustRule:
        """Build from plain strings; PolicyError on an invalid network, version or glob."""
        return cls(
            name,
            level,
            listeners=tuple(listeners),
            tls=tls,
            tls_min=tls_min,
            devices=tuple(devices),
            device_ca=device_ca,
            networks=_parse_networks(networks),
            accounts=tuple(GlobPattern(a) for a in accounts),
        )

    def describe(self) -> str:
        """The rule's conditions in words ("any connection" when it has none)."""
        parts = []
        if self.listeners:
            parts.append("listener " + "|".join(self.listeners))
        if self.tls is True and self.tls_min is None:
            parts.append("TLS")
        if self.tls is False:
            parts.append("no TLS")
        if self.tls_min is not None:
            parts.append(f"TLS >= {self.tls_min}")
        if self.devices:
            parts.append("device " + "|".join(self.devices))
        if self.device_ca:
            parts.append("certificate from the device CA")
        if self.networks:
            parts.append("network " + "|".join(str(n) for n in self.networks))
        if self.accounts:
            parts.append("account " + "|".join(a.text for a in self.accounts))
        return ", ".join(parts) if parts else "any connection"


@dataclass(frozen=True)
class ClientIdRule:
    """A client-ID rule: when the client declared every field given, each value matching its
    glob (case-insensitive), the clearance is lowered to ``level`` (never raised)."""

    name: str
    level: str
    fields: tuple[tuple[str, GlobPattern], ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise PolicyError("a client-ID rule needs a name")
        if not self.fields:
            raise PolicyError(f"client-ID rule {self.name!r} needs at least one field to match")
        object.__setattr__(
            self, "fields", tuple((key.lower(), glob) for key, glob in self.fields)
        )

    @classmethod
    def of(cls, name: str, level: str, fields: Mapping[str, str]) -> ClientIdRule:
        return cls(name, level, tuple((key, GlobPattern(glob)) for key, glob in fields.items()))

    def matches(self, declared: Mapping[str, str | None]) -> bool:
        for key, glob in self.fields:
            value = declared.get(key)
            if value is None or not glob.matches(value):
                return False
        return True


# -- the policy -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustPolicy:
    """Trust rules (first match wins), the device registry and the client-ID rules.

    ``levels`` is the scale shared with message verdicts; a connection no rule matches gets
    its lowest level. The default policy has no rules: every connection gets the lowest level.
    """

    levels: LevelScale = field(default_factory=LevelScale)
    rules: tuple[TrustRule, ...] = ()
    devices: tuple[Device, ...] = ()
    client_id_rules: tuple[ClientIdRule, ...] = ()
    _by_fingerprint: Mapping[str, Device] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        prints: dict[str, str] = {}
        for device in self.devices:
            if device.name in names:
                raise PolicyError(f"device {device.name!r} is registered twice")
            if device.fingerprint in prints:
                raise PolicyError(
                    f"devices {prints[device.fingerprint]!r} and {device.name!r} have the same fingerprint"
                )
            names.add(device.name)
            prints[device.fingerprint] = device.name
        seen: set[str] = set()
        for rule in self.rules:
            self._check_level("rule", rule.name, rule.level)
            if rule.name in seen:
                raise PolicyError(f"two trust rules are named {rule.name!r}")
            seen.add(rule.name)
            for name in rule.devices:
                if name not in names:
                    raise PolicyError(
                        f"rule {rule.name!r}: device {name!r} is not in the device registry"
                    )
        seen = set()
        for id_rule in self.client_id_rules:
            self._check_level("client-ID rule", id_rule.name, id_rule.level)
            if id_rule.name in seen:
                raise PolicyError(f"two client-ID rules are named {id_rule.name!r}")
            seen.add(id_rule.name)
        object.__setattr__(
            self, "_by_fingerprint", MappingProxyType({d.fingerprint: d for d in self.devices})
        )

    def _check_level(self, kind: str, name: str, level: str) -> None:
        if level not in self.levels:
            raise PolicyError(
                f"{kind} {name!r}: unknown level {level!r}; known: {', '.join(self.levels.names)}"
            )

    @property
    def default_level(self) -> str:
        return self.levels.lowest

    def device(self, fingerprint: str) -> Device | None:
        """The registry entry for a certificate fingerprint (any spelling), or None."""
        try:
            return self._by_fingerprint.get(normalise_fingerprint(fingerprint))
        except PolicyError:
            return None

    @property
    def uses_certificates(self) -> bool:
        """Whether anything in the policy looks at client certificates."""
        return bool(self.devices) or any(r.devices or r.device_ca for r in self.rules)


# -- the decision ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clearance:
    """The level a connection may see up to, the rule that decided it (None: the default), and
    every reason in the order it was considered."""

    level: str
    reasons: tuple[str, ...]
    rule: str | None = None


@dataclass(frozen=True)
class _Certificate:
    """What the client certificate is worth at ``now``."""

    present: bool = False
    device: Device | None = None  # a registered device in good standing
    from_ca: bool = False  # valid, chains to the device CA, and not revoked in the registry


def _judge_certificate(
    facts: ConnectionFacts, policy: TrustPolicy, now: datetime, reasons: list[str]
) -> _Certificate:
    fingerprint = facts.cert_fingerprint
    if fingerprint is None:
        reasons.append("no client certificate")
        return _Certificate()
    subject = f"client certificate {_shown_fingerprint(fingerprint)}"
    if facts.cert_not_after is not None and facts.cert_not_after <= now:
        reasons.append(f"{subject} expired at {_when(facts.cert_not_after)}: not a device")
        return _Certificate(present=True)
    device = policy.device(fingerprint)
    standing = True
    if device is None:
        reasons.append(f"{subject} is not a registered device")
    else:
        problem = device.problem(now)
        if problem is None:
            reasons.append(f"{subject} is registered device {device.name!r}")
        else:
            standing = False
            reasons.append(f"{subject} is device {device.name!r}, which {problem}: treated as unknown")
            device = None
    if facts.chains_to_device_ca:
        reasons.append("the certificate chains to the device CA")
    else:
        reasons.append("the certificate does not chain to the device CA")
    return _Certificate(present=True, device=device, from_ca=facts.chains_to_device_ca and standing)


def _mismatch(rule: TrustRule, facts: ConnectionFacts, cert: _Certificate) -> str | None:
    """Why ``rule`` does not apply to the connection (its first failed condition), or None."""
    if rule.listeners and facts.listener not in rule.listeners:
        return f"listener {facts.listener!r} is not {'|'.join(rule.listeners)}"
    if rule.tls is True and not facts.tls:
        return "the connection is not TLS"
    if rule.tls is False and facts.tls:
        return "the connection is TLS"
    if rule.tls_min is not None:
        if not facts.tls:
            return f"the connection is not TLS (needs TLS >= {rule.tls_min})"
        version = facts.tls_version
        if version not in TLS_VERSIONS:
            return f"TLS version {version or 'unknown'} is not known to be >= {rule.tls_min}"
        if TLS_VERSIONS.index(version) < TLS_VERSIONS.index(rule.tls_min):
            return f"TLS {version} is below {rule.tls_min}"
    if rule.devices:
        if cert.device is None:
            return "no registered device in good standing"
        if cert.device.name not in rule.devices:
            return f"device {cert.device.name!r} is not {'|'.join(rule.devices)}"
    if rule.device_ca and not cert.from_ca:
        return "no valid certificate from the device CA"
    if rule.networks:
        ip = facts.ip
        if ip is None:
            return f"client address {facts.client_address!r} is not an IP address"
        if not any(ip in network for network in rule.networks):
            return f"client address {ip} is not in {'|'.join(str(n) for n in rule.networks)}"
    if rule.accounts:
        if facts.account is None:
            return "no authenticated account"
        if not any(glob.matches(facts.account) for glob in rule.accounts):
            return f"account {_quote(facts.account)} is not {'|'.join(a.text for a in rule.accounts)}"
    return None


def _transport(facts: ConnectionFacts) -> str:
    where = f"listener {facts.listener!r}, client {facts.client_address}"
    if not facts.tls:
        return f"{where}, no TLS"
    version = facts.tls_version or "version unknown"
    cipher = f" ({facts.cipher})" if facts.cipher else ""
    return f"{where}, TLS {version}{cipher}"


def clearance(facts: ConnectionFacts, policy: TrustPolicy, *, now: datetime) -> Clearance:
    """Decide the clearance of the connection described by ``facts`` at time ``now``."""
    now = _utc(now)
    reasons = [_transport(facts)]
    if facts.account is not None:
        mechanism = f" ({facts.sasl_mechanism})" if facts.sasl_mechanism else ""
        reasons.append(f"account {_quote(facts.account)}{mechanism}")
    cert = _judge_certificate(facts, policy, now, reasons)

    level = policy.default_level
    decided: str | None = None
    for rule in policy.rules:
        miss = _mismatch(rule, facts, cert)
        if miss is None:
            level, decided = rule.level, rule.name
            reasons.append(f"rule {rule.name!r} matched ({rule.describe()}): level {level}")
            break
        reasons.append(f"rule {rule.name!r} does not apply: {miss}")
    else:
        reasons.append(f"no trust rule matched: the lowest level, {level}")

    if policy.client_id_rules:
        level = _apply_client_id(facts, policy, level, reasons)
    return Clearance(level, tuple(reasons), decided)


def _apply_client_id(
    facts: ConnectionFacts, policy: TrustPolicy, level: str, reasons: list[str]
) -> str:
    declared = facts.client_id
    if declared is None:
        reasons.append("the client declared no ID: client-ID rules do not apply")
        return level
    for rule in policy.client_id_rules:
        if not rule.matches(declared):
            continue
        shown = ", ".join(f"{key}={_quote(declared.get(key) or '')}" for key, _ in rule.fields)
        if policy.levels.rank(rule.level) < policy.levels.rank(level):
            reasons.append(
                f"client-ID rule {rule.name!r} matched ({shown}): lowered from {level} to {rule.level}"
            )
            level = rule.level
        else:
            reasons.append(
                f"client-ID rule {rule.name!r} matched ({shown}): {rule.level} would not lower {level}"
            )
    return level
