"""The ``trust:`` and ``devices:`` sections of the configuration: turning parsed YAML (plain
mappings, lists and scalars) into the frozen ``caliproxy.privacy.trust.TrustPolicy``.

Strict: an unknown key, a wrong type or an invalid value is a ``ConfigError`` naming the dotted
path (``trust.rules[1].match.network[0]``) and, when the caller passes a line map, the line.
This module never reads files and never imports yaml: the main configuration loader parses the
file and hands the sections here; tests pass mappings directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TypeVar

from caliproxy.errors import PolicyError
from caliproxy.mapping_reader import MappingReader, kind
from caliproxy.privacy.levels import LevelScale
from caliproxy.privacy.trust import ClientIdRule, Device, TrustPolicy, TrustRule

T = TypeVar("T")

_TRUST_KEYS = ("rules", "client_id")
_RULE_KEYS = ("name", "level", "match")
_MATCH_KEYS = ("listener", "tls", "tls_min", "device", "device_ca", "network", "account")
_ID_RULE_KEYS = ("name", "level", "match")
_DEVICE_KEYS = ("name", "fingerprint", "expires", "revoked")


class _Reader(MappingReader):
    """The reader with this section's own value types."""





    def items(self, value: object, path: str, what: str) -> list[object]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list of {what}, got {kind(value)}")
        return value

    def string(self, value: object, path: str) -> str:
        # YAML reads 1.3 as a number; a TLS version or a name written bare still means its text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected a non-empty string, got {kind(value)}")
        return value.strip()

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        """A list of strings; a single string is read as a one-item list."""
        if not isinstance(value, list):
            return (self.string(value, path),)
        if not value:
            self.fail(path, "expected at least one item")
        return tuple(self.string(item, f"{path}[{i}]") for i, item in enumerate(value))


    def moment(self, value: object, path: str) -> datetime:
        """A date (valid through that whole day, UTC) or a date and time (naive: UTC)."""
        if isinstance(value, str):
            text = value.strip()
            try:
                # A quoted date means the same as a bare one: the whole day.
                value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            except ValueError:
                self.fail(path, f"expected a date (2026-12-31) or date and time, got {value!r}")
        if isinstance(value, datetime):
            return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if isinstance(value, date):
            return datetime.combine(value + timedelta(days=1), time(0, 0), tzinfo=UTC)
        self.fail(path, f"expected a date (2026-12-31) or date and time, got {kind(value)}")

    def level(self, value: object, path: str, levels: LevelScale) -> str:
        name = self.string(value, path)
        if name not in levels:
            self.fail(path, f"unknown level {name!r} (levels: {', '.join(levels.names)})")
        return name

    def build(self, path: str, make: Callable[[], T]) -> T:
        """Run a constructor, turning its PolicyError into a ConfigError at ``path``."""
        try:
            return make()
        except PolicyError as exc:
            self.fail(path, str(exc))


def _device(reader: _Reader, value: object, path: str) -> Device:
    data = reader.mapping(value, path, _DEVICE_KEYS)
    for key in ("name", "fingerprint"):
        if key not in data:
            reader.fail(f"{path}.{key}", "required")
    name = reader.string(data["name"], f"{path}.name")
    if not isinstance(data["fingerprint"], str):
        # Unquoted, YAML may read colon-separated digits as a base-60 number.
        reader.fail(f"{path}.fingerprint",
                    f"expected a quoted string, got {kind(data['fingerprint'])}")
    fingerprint = reader.string(data["fingerprint"], f"{path}.fingerprint")
    expires = reader.moment(data["expires"], f"{path}.expires") if data.get("expires") is not None else None
    revoked = reader.boolean(data["revoked"], f"{path}.revoked") if "revoked" in data else False
    reader.build(f"{path}.fingerprint", lambda: Device("x", fingerprint))
    return reader.build(path, lambda: Device(name, fingerprint, expires, revoked))


def _rule(reader: _Reader, value: object, path: str, position: int, levels: LevelScale,
          devices: set[str]) -> TrustRule:
    data = reader.mapping(value, path, _RULE_KEYS)
    if "level" not in data:
        reader.fail(f"{path}.level", "required")
    name = reader.string(data["name"], f"{path}.name") if "name" in data else f"rules[{position}]"
    level = reader.level(data["level"], f"{path}.level", levels)
    match_path = f"{path}.match"
    match = reader.mapping(data.get("match", {}) or {}, match_path, _MATCH_KEYS)

    def listed(key: str) -> tuple[str, ...]:
        return reader.strings(match[key], f"{match_path}.{key}") if key in match else ()

    def flag(key: str) -> bool | None:
        return reader.boolean(match[key], f"{match_path}.{key}") if key in match else None

    tls_min = reader.string(match["tls_min"], f"{match_path}.tls_min") if "tls_min" in match else None
    if tls_min is not None:
        reader.build(f"{match_path}.tls_min",
                     lambda: TrustRule.of("x", level, tls_min=tls_min))
    device_names = listed("device")
    for i, device in enumerate(device_names):
        if device not in devices:
            where = f"{match_path}.device" if not isinstance(match["device"], list) else f"{match_path}.device[{i}]"
            known = ", ".join(sorted(devices)) or "none registered"
            reader.fail(where, f"unknown device {device!r} (devices: {known})")
    networks = listed("network")
    for i, network in enumerate(networks):
        where = f"{match_path}.network" if not isinstance(match["network"], list) else f"{match_path}.network[{i}]"
        reader.build(where, partial(TrustRule.of, "x", level, networks=(network,)))
    accounts = listed("account")
    for i, account in enumerate(accounts):
        where = f"{match_path}.account" if not isinstance(match["account"], list) else f"{match_path}.account[{i}]"
        reader.build(where, partial(TrustRule.of, "x", level, accounts=(account,)))
    device_ca = flag("device_ca") or False
    tls, listeners = flag("tls"), listed("listener")
    return reader.build(
        path,
        lambda: TrustRule.of(
            name, level, listeners=listeners, tls=tls, tls_min=tls_min, devices=device_names,
            device_ca=device_ca, networks=networks, accounts=accounts,
        ),
    )


def _client_id_rule(reader: _Reader, value: object, path: str, position: int,
                    levels: LevelScale) -> ClientIdRule:
    data = reader.mapping(value, path, _ID_RULE_KEYS)
    for key in ("level", "match"):
        if key not in data:
            reader.fail(f"{path}.{key}", "required")
    name = reader.string(data["name"], f"{path}.name") if "name" in data else f"client_id[{position}]"
    level = reader.level(data["level"], f"{path}.level", levels)
    match_path = f"{path}.match"
    raw = data["match"]
    if not isinstance(raw, Mapping) or not raw:
        reader.fail(match_path, "expected a mapping of ID field names to globs, e.g. {name: '*Mail*'}")
    fields: dict[str, str] = {}
    for key, glob in raw.items():
        if not isinstance(key, str) or not key.strip():
            reader.fail(match_path, f"ID field names must be strings, got {key!r}")
        fields[key] = reader.string(glob, f"{match_path}.{key}")
    return reader.build(path, lambda: ClientIdRule.of(name, level, fields))


def trust_from_mapping(
    trust: Mapping[str, object] | None,
    devices: object = None,
    *,
    levels: LevelScale | None = None,
    lines: Mapping[str, int] | None = None,
) -> TrustPolicy:
    """Build a ``TrustPolicy`` from the parsed ``trust:`` section and ``devices:`` list.

    ``levels`` is the scale of the message policy (default: the default scale); ``lines`` maps
    dotted paths (``trust.rules[0].level``, ``devices[1].fingerprint``) to line numbers. Both
    sections may be missing (None): then every connection gets the lowest level.
    """
    reader = _Reader(lines)
    scale = levels or LevelScale()

    registry: list[Device] = []
    names: dict[str, int] = {}
    prints: dict[str, str] = {}
    if devices is not None:
        for i, item in enumerate(reader.items(devices, "devices", "devices")):
            device = _device(reader, item, f"devices[{i}]")
            if device.name in names:
                reader.fail(f"devices[{i}].name",
                            f"device {device.name!r} is already registered as devices[{names[device.name]}]")
            if device.fingerprint in prints:
                reader.fail(f"devices[{i}].fingerprint",
                            f"the same certificate is already registered as {prints[device.fingerprint]!r}")
            names[device.name] = i
            prints[device.fingerprint] = device.name
            registry.append(device)

    section = reader.mapping(trust if trust is not None else {}, "trust", _TRUST_KEYS)
    rules: list[TrustRule] = []
    seen: dict[str, int] = {}
    if "rules" in section:
        for i, item in enumerate(reader.items(section["rules"], "trust.rules", "rules")):
            rule = _rule(reader, item, f"trust.rules[{i}]", i, scale, set(names))
            if rule.name in seen:
                reader.fail(f"trust.rules[{i}].name",
                            f"rule name {rule.name!r} is already used by trust.rules[{seen[rule.name]}]")
            seen[rule.name] = i
            rules.append(rule)
    id_rules: list[ClientIdRule] = []
    seen = {}
    if "client_id" in section:
        for i, item in enumerate(reader.items(section["client_id"], "trust.client_id", "rules")):
            id_rule = _client_id_rule(reader, item, f"trust.client_id[{i}]", i, scale)
            if id_rule.name in seen:
                reader.fail(f"trust.client_id[{i}].name",
                            f"rule name {id_rule.name!r} is already used by trust.client_id[{seen[id_rule.name]}]")
            seen[id_rule.name] = i
            id_rules.append(id_rule)

    return reader.build(
        "trust",
        lambda: TrustPolicy(scale, tuple(rules), tuple(registry), tuple(id_rules)),
    )
