"""The YAML configuration: read strictly, validated completely, turned into frozen dataclasses.

Owns the schema of every section and the error messages users see. Unknown keys, wrong types and
missing required keys are errors naming the file, the line and the dotted path
(``listeners[1].port``); the errors of every section are reported together (``policy`` and
``trust``, read by their own modules, give their first error each).
Imports PyYAML; nothing in the protocol rings imports this module's YAML side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from caliproxy.errors import ConfigError
from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.header import DEFAULT_HEADER, HeaderName, PrivacyHeaderError
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.trust import Device, TrustPolicy
from caliproxy.trust_config import trust_from_mapping

TLS_MODES = ("implicit", "starttls", "none")


@dataclass(frozen=True)
class ListenerConfig:
    """One client-facing socket."""

    name: str
    protocol: str  # "imap" or "smtp"
    address: str
    port: int
    tls: str  # implicit | starttls | none
    allow_plaintext_login: bool
    tagging: bool = True  # add the privacy header to messages read or sent through it
    proxy_protocol: bool = False  # connections start with a HAProxy PROXY header (v1 or v2)
    proxy_protocol_from: tuple[str, ...] = ()  # load balancers allowed to send it (CIDR)


@dataclass(frozen=True)
class UpstreamConfig:
    """A real server behind the proxy (IMAP or SMTP submission)."""

    host: str
    port: int
    tls: str  # implicit | starttls | none
    ca_file: Path | None  # None: the system's trust store
    server_name: str | None  # the name to verify in its certificate (default: host)
    connect_timeout: float
    # upstream.smtp only: seconds to wait for the greeting and each reply to a command (DATA's
    # 354 included), and for the final reply once the message is sent (the server may scan it)
    reply_timeout: float = 60.0
    data_timeout: float = 90.0

    @property
    def verify_name(self) -> str:
        return self.server_name or self.host


@dataclass(frozen=True)
class TLSConfig:
    """Our own certificate chain and key, shown to clients."""

    certificate: Path
    key: Path
    client_ca: Path | None = None  # the device CA: client certificates are requested, not required


@dataclass(frozen=True)
class LimitsConfig:
    max_line_length: int = 65536
    max_response_line_length: int = 16 * 1024 * 1024
    max_literal_size: int = 64 * 1024 * 1024
    preauth_timeout: float = 60.0
    idle_timeout: float = 1800.0


@dataclass(frozen=True)
class CacheConfig:
    path: str = ":memory:"  # the SQLite file of the classification cache


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "human"  # human | json


@dataclass(frozen=True)
class MetricsConfig:
    """Where Prometheus scrapes us; None in Config means no metrics endpoint."""

    address: str = "127.0.0.1"
    port: int = 9465


@dataclass(frozen=True)
class Config:
    listeners: tuple[ListenerConfig, ...]
    upstream_imap: UpstreamConfig
    tls: TLSConfig | None
    upstream_smtp: UpstreamConfig | None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = "<config>"
    policy: Policy = field(default_factory=Policy)
    cache: CacheConfig = field(default_factory=CacheConfig)
    trust: TrustPolicy = field(default_factory=TrustPolicy)  # no rules: the lowest level for all
    devices: tuple[Device, ...] = ()  # the device registry (also in trust.devices)
    proxy_protocol_from: tuple[str, ...] = ()  # default load balancers for proxy_protocol listeners
    metrics: MetricsConfig | None = None
    header: HeaderName = DEFAULT_HEADER  # the privacy header's field name


# -- reading YAML with line numbers ---------------------------------------------------------------


class _Reader:
    """Walks YAML nodes, remembering each value's line, collecting every error it finds."""

    def __init__(self, source: str, check_files: bool = True) -> None:
        self.source = source
        self.check_files = check_files
        self.errors: list[str] = []

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.errors.append(f"{self.source}{line}: {path}: {message}")

    def mapping(self, node: yaml.Node | None, path: str, allowed: set[str],
                required: set[str] = frozenset()) -> dict[str, yaml.Node]:  # type: ignore[assignment]
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, "must be a mapping")
            return {}
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str) or key not in allowed:
                hint = f" (known keys: {', '.join(sorted(allowed))})"
                self.error(key_node, sub, "unknown key" + hint)
            elif key in result:
                self.error(key_node, sub, "duplicate key")
            else:
                result[key] = value_node
        for key in sorted(required - result.keys()):
            self.error(node, f"{path}.{key}" if path else key, "required key is missing")
        return result

    def sequence(self, node: yaml.Node | None, path: str) -> list[yaml.Node]:
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, "must be a list")
            return []
        return list(node.value)

    def scalar(self, node: yaml.Node | None, path: str, kind: type, default: Any = None,
               check: Callable[[Any], str | None] | None = None) -> Any:
        if node is None:
            return default
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"must be a {kind.__name__}")
            return default
        value = yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" else node.value
        if value is None and node.tag.endswith(":null"):
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = node.value
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(node, path, f"must be a {kind.__name__}, not {value!r}")
            return default
        if check is not None:
            problem = check(value)
            if problem:
                self.error(node, path, problem)
                return default
        return value


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number 0-65535"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address"
    return None


def _readable_file(r: _Reader, base: Path) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not r.check_files:
            return None
        path = base / value
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        return None

    return check


# -- sections -------------------------------------------------------------------------------------


def _listeners(r: _Reader, node: yaml.Node | None, have_tls: bool,
               proxy_from: tuple[str, ...] = ()) -> tuple[ListenerConfig, ...]:
    result = []
    seen: dict[tuple[str, int], str] = {}
    names: set[str] = set()
    items = r.sequence(node, "listeners")
    if node is not None and not items:
        r.error(node, "listeners", "at least one listener is required")
    for index, item in enumerate(items):
        path = f"listeners[{index}]"
        keys = r.mapping(item, path, {"name", "protocol", "address", "port", "tls",
                                      "allow_plaintext_login", "tagging", "proxy_protocol",
                                      "proxy_protocol_from"}, {"name", "port", "tls"})
        name = r.scalar(keys.get("name"), f"{path}.name", str, default=f"listener{index}")
        protocol = r.scalar(keys.get("protocol"), f"{path}.protocol", str, "imap",
                            _one_of("imap", "smtp"))
        address = r.scalar(keys.get("address"), f"{path}.address", str, "127.0.0.1", _address)
        port = r.scalar(keys.get("port"), f"{path}.port", int, 0, _port)
        tls = r.scalar(keys.get("tls"), f"{path}.tls", str, "none", _one_of(*TLS_MODES))
        if tls != "none" and not have_tls:
            r.error(keys.get("tls"), f"{path}.tls",
                    f"tls: {tls} needs the top-level tls: certificate and key")
        plain = r.scalar(keys.get("allow_plaintext_login"), f"{path}.allow_plaintext_login", bool, False)
        tagging = r.scalar(keys.get("tagging"), f"{path}.tagging", bool, True)
        proxied = r.scalar(keys.get("proxy_protocol"), f"{path}.proxy_protocol", bool, False)
        balancers = (_networks(r, keys["proxy_protocol_from"], f"{path}.proxy_protocol_from")
                     if "proxy_protocol_from" in keys else proxy_from)
        if proxied and protocol == "smtp":
            # The submission listener (aiosmtpd) reads no PROXY header: its first line would
            # be taken for a command. Refused rather than ignored.
            r.error(keys.get("proxy_protocol"), f"{path}.proxy_protocol",
                    "is supported on imap listeners only")
        elif proxied and not balancers:
            r.error(keys.get("proxy_protocol"), f"{path}.proxy_protocol",
                    "needs proxy_protocol_from (here or at the top level): the load balancers "
                    "allowed to send PROXY headers")
        if name in names:
            r.error(keys.get("name"), f"{path}.name", f"duplicate listener name {name!r}")
        names.add(name)
        if port and (address, port) in seen:
            r.error(keys.get("port"), f"{path}.port", f"{address}:{port} is also used by {seen[address, port]}")
        seen[address, port] = name
        result.append(ListenerConfig(name, protocol, address, port, tls, plain, tagging, proxied,
                                     balancers if proxied else ()))
    return tuple(result)


def _upstreams(r: _Reader, node: yaml.Node | None, base: Path
               ) -> tuple[UpstreamConfig, UpstreamConfig | None]:
    keys = r.mapping(node, "upstream", {"imap", "smtp"}, {"imap"})
    imap = _upstream(r, keys.get("imap"), "upstream.imap", base)
    smtp = (_upstream(r, keys.get("smtp"), "upstream.smtp", base, smtp=True) if "smtp" in keys
            else None)
    return imap, smtp


def _upstream(r: _Reader, node: yaml.Node | None, path: str, base: Path,
              smtp: bool = False) -> UpstreamConfig:
    allowed = {"host", "port", "tls", "ca_file", "server_name", "connect_timeout"}
    if smtp:
        allowed |= {"reply_timeout", "data_timeout"}
    keys = r.mapping(node, path, allowed, {"host", "port"})
    ca = r.scalar(keys.get("ca_file"), f"{path}.ca_file", str, None, _readable_file(r, base))
    return UpstreamConfig(
        host=r.scalar(keys.get("host"), f"{path}.host", str, ""),
        port=r.scalar(keys.get("port"), f"{path}.port", int, 0, _port),
        tls=r.scalar(keys.get("tls"), f"{path}.tls", str, "implicit", _one_of(*TLS_MODES)),
        ca_file=base / ca if ca else None,
        server_name=r.scalar(keys.get("server_name"), f"{path}.server_name", str, None),
        connect_timeout=r.scalar(keys.get("connect_timeout"), f"{path}.connect_timeout", float, 30.0,
                                 _positive),
        reply_timeout=r.scalar(keys.get("reply_timeout"), f"{path}.reply_timeout", float, 60.0,
                               _positive),
        data_timeout=r.scalar(keys.get("data_timeout"), f"{path}.data_timeout", float, 90.0,
                              _positive),
    )


def _tls(r: _Reader, node: yaml.Node | None, base: Path) -> TLSConfig | None:
    if node is None:
        return None
    keys = r.mapping(node, "tls", {"certificate", "key", "client_ca"}, {"certificate", "key"})
    cert = r.scalar(keys.get("certificate"), "tls.certificate", str, None, _readable_file(r, base))
    key = r.scalar(keys.get("key"), "tls.key", str, None, _readable_file(r, base))
    client_ca = r.scalar(keys.get("client_ca"), "tls.client_ca", str, None, _readable_file(r, base))
    if cert is None or key is None:
        return None
    return TLSConfig(base / cert, base / key, base / client_ca if client_ca else None)


def _networks(r: _Reader, node: yaml.Node | None, path: str) -> tuple[str, ...]:
    result = []
    for index, item in enumerate(r.sequence(node, path)):
        text = r.scalar(item, f"{path}[{index}]", str, None, _network)
        if text is not None:
            result.append(text)
    return tuple(result)


def _network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be an IP network (CIDR) or address"
    return None


def _limits(r: _Reader, node: yaml.Node | None) -> LimitsConfig:
    defaults = LimitsConfig()
    names = {"max_line_length": int, "max_response_line_length": int, "max_literal_size": int,
             "preauth_timeout": float, "idle_timeout": float}
    keys = r.mapping(node, "limits", set(names))
    values = {
        name: r.scalar(keys.get(name), f"limits.{name}", kind, getattr(defaults, name), _positive)
        for name, kind in names.items()
    }
    if values["idle_timeout"] < 1800:
        r.error(keys.get("idle_timeout"), "limits.idle_timeout",
                "must be at least 1800 seconds (RFC 3501 §5.4 autologout timer)")
    return LimitsConfig(**values)


def _plain(node: yaml.Node, path: str, lines: dict[str, int]) -> object:
    """The node as plain Python values, recording each dotted path's line for error messages."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        return {key.value: _plain(value, f"{path}.{key.value}", lines) for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, f"{path}[{i}]", lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _policy(r: _Reader, node: yaml.Node | None) -> Policy:
    if node is None:
        return Policy()
    lines: dict[str, int] = {}
    data = _plain(node, "policy", lines)
    if not isinstance(data, dict):
        r.error(node, "policy", "must be a mapping")
        return Policy()
    try:
        return policy_from_mapping(data, path="policy", lines=lines)
    except ConfigError as exc:
        r.errors.extend(f"{r.source}: {line}" for line in str(exc).splitlines())
        return Policy()


def _trust(r: _Reader, trust: yaml.Node | None, devices: yaml.Node | None, policy: Policy,
           listeners: tuple[ListenerConfig, ...]) -> TrustPolicy:
    lines: dict[str, int] = {}
    trust_data = _plain(trust, "trust", lines) if trust is not None else None
    devices_data = _plain(devices, "devices", lines) if devices is not None else None
    if trust_data is not None and not isinstance(trust_data, dict):
        r.error(trust, "trust", "must be a mapping")
        return TrustPolicy(policy.levels)
    try:
        result = trust_from_mapping(trust_data, devices_data, levels=policy.levels, lines=lines)
    except ConfigError as exc:
        r.errors.extend(f"{r.source}: {line}" for line in str(exc).splitlines())
        return TrustPolicy(policy.levels)
    names = {listener.name for listener in listeners}
    for index, rule in enumerate(result.rules):
        for unknown in sorted(set(rule.listeners) - names):
            r.error(trust, f"trust.rules[{index}].match.listener",
                    f"no listener is named {unknown!r}")
    return result


def _cache(r: _Reader, node: yaml.Node | None, base: Path) -> CacheConfig:
    keys = r.mapping(node, "cache", {"path"})
    path = r.scalar(keys.get("path"), "cache.path", str, ":memory:")
    return CacheConfig(path if path == ":memory:" else str(base / path))


def _header(r: _Reader, node: yaml.Node | None) -> HeaderName:
    keys = r.mapping(node, "header", {"name"})
    name = r.scalar(keys.get("name"), "header.name", str, None)
    if name is None:
        return DEFAULT_HEADER
    try:
        return HeaderName(name)
    except PrivacyHeaderError as exc:
        r.error(keys.get("name"), "header.name", str(exc))
        return DEFAULT_HEADER


def _logging(r: _Reader, node: yaml.Node | None) -> LoggingConfig:
    keys = r.mapping(node, "logging", {"level", "format"})
    level = r.scalar(keys.get("level"), "logging.level", str, "info",
                     _one_of("debug", "info", "warning", "error"))
    fmt = r.scalar(keys.get("format"), "logging.format", str, "human", _one_of("human", "json"))
    return LoggingConfig(level, fmt)


def _metrics(r: _Reader, node: yaml.Node | None) -> MetricsConfig | None:
    if node is None:
        return None
    keys = r.mapping(node, "metrics", {"address", "port"})
    address = r.scalar(keys.get("address"), "metrics.address", str, "127.0.0.1", _address)
    port = r.scalar(keys.get("port"), "metrics.port", int, 9465, _port)
    return MetricsConfig(address, port)


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None,
                 check_files: bool = True) -> Config:
    """Parse and validate a whole configuration; ConfigError lists every problem found.

    ``check_files=False`` skips checking that referenced files are readable (for documentation
    examples whose paths exist only on a real server)."""
    base = base or Path.cwd()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    r = _Reader(source, check_files)
    if root is None:
        raise ConfigError(f"{source}: the file is empty")
    top = r.mapping(root, "", {"listeners", "upstream", "tls", "limits", "logging", "policy",
                               "cache", "trust", "devices", "proxy_protocol_from", "metrics", "header"},
                    {"listeners", "upstream"})
    proxy_from = (_networks(r, top["proxy_protocol_from"], "proxy_protocol_from")
                  if "proxy_protocol_from" in top else ())
    listeners = _listeners(r, top.get("listeners"), "tls" in top, proxy_from)
    upstream, upstream_smtp = _upstreams(r, top.get("upstream"), base)
    for index, listener in enumerate(listeners):
        if listener.protocol == "smtp" and upstream_smtp is None:
            r.error(top.get("upstream"), "upstream.smtp",
                    f"listeners[{index}] is an smtp listener: upstream.smtp is required")
    tls = _tls(r, top.get("tls"), base)
    limits = _limits(r, top.get("limits"))
    logging_config = _logging(r, top.get("logging"))
    errors_before_policy = len(r.errors)
    policy = _policy(r, top.get("policy"))
    policy_valid = len(r.errors) == errors_before_policy
    cache = _cache(r, top.get("cache"), base)
    header = _header(r, top.get("header"))
    metrics = _metrics(r, top.get("metrics"))
    # Trust rules name the policy's levels: checked against an invalid policy's stand-in
    # (the default levels), they would report levels that are fine as unknown.
    trust = (_trust(r, top.get("trust"), top.get("devices"), policy, listeners) if policy_valid
             else TrustPolicy(policy.levels))
    if r.errors:
        raise ConfigError("\n".join(r.errors))
    return Config(tuple(listeners), upstream, tls, upstream_smtp, limits, logging_config, source,
                  policy, cache, trust, trust.devices, proxy_from, metrics, header)


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read and validate the configuration file at ``path``; relative paths in it are relative
    to the file's own directory. ``check_files=False`` is for commands that only need the
    policy (``explain``), not certificates."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(text, source=str(path), base=path.resolve().parent, check_files=check_files)
