"""The ``policy:`` section of the configuration: turning parsed YAML (plain mappings, lists and
scalars) into the frozen ``caliproxy.privacy.policy.Policy`` the engine takes.

Strict: an unknown key, a wrong type or an invalid value is a ``ConfigError`` naming the dotted
path (``policy.rules[2].match.sender``) and, when the caller passes a line map, the line.
This module never reads files and never imports yaml: the main configuration loader parses the
file and hands the section here; tests pass mappings directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from caliproxy.errors import PolicyError
from caliproxy.mapping_reader import MappingReader, kind
from caliproxy.privacy.addresses import AddressPattern, GlobPattern
from caliproxy.privacy.features import SENSITIVITY_VALUES
from caliproxy.privacy.levels import DEFAULT_LEVELS, LevelScale
from caliproxy.privacy.policy import (
    INDEX_TARGETS,
    HeaderPattern,
    IndexRange,
    Match,
    Policy,
    Rule,
    TrustedRelays,
    check_level_names,
)
from caliproxy.privacy.scoring import GRADES

T = TypeVar("T")

_POLICY_KEYS = (
    "levels",
    "default_level",
    "trusted_relays",
    "authserv_ids",
    "known_correspondents",
    "spam_threshold",
    "rules",
)
_RELAY_KEYS = ("hosts", "networks")
_RULE_KEYS = ("name", "level", "match")
_MATCH_KEYS = (
    "sender",
    "recipient",
    "list",
    "folder",
    "account",
    "sensitivity",
    "encrypted",
    "signed",
    "spam",
    "index",
    "grade",
    "header",
)
_RANGE_KEYS = ("min", "max")
_HEADER_KEYS = ("name", "regex")


class _Reader(MappingReader):
    """The reader with this section's own value types."""





    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected a non-empty string, got {kind(value)}")
        return value.strip()

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        """A list of strings; a single string is read as a one-item list."""
        if isinstance(value, str):
            return (self.string(value, path),)
        if not isinstance(value, list):
            self.fail(path, f"expected a string or a list of strings, got {kind(value)}")
        return tuple(self.string(item, f"{path}[{i}]") for i, item in enumerate(value))


    def number(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"expected a number, got {kind(value)}")
        return float(value)

    def score(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            self.fail(path, f"expected a whole number from 0 to 100, got {value!r}")
        return value

    def build(self, path: str, make: Callable[..., T], *args: object) -> T:
        """Run a policy constructor, turning its PolicyError into a ConfigError at ``path``."""
        try:
            return make(*args)
        except PolicyError as exc:
            self.fail(path, str(exc))


def _level_scale(names: tuple[str, ...]) -> LevelScale:
    levels = LevelScale(names)
    check_level_names(levels)
    return levels


def _folder_glob(pattern: str) -> GlobPattern:
    # RFC 3501 §5.1: INBOX is case-insensitive, every other mailbox name is case-sensitive.
    return GlobPattern("INBOX" if pattern.upper() == "INBOX" else pattern, case_sensitive=True)


def _match(reader: _Reader, value: object, path: str) -> Match:
    data = reader.mapping(value, path, _MATCH_KEYS)

    def addresses(key: str) -> tuple[AddressPattern, ...]:
        if key not in data:
            return ()
        items = reader.strings(data[key], f"{path}.{key}")
        return tuple(
            reader.build(f"{path}.{key}[{i}]", AddressPattern, p) for i, p in enumerate(items)
        )

    def globs(key: str, make: Callable[[str], GlobPattern]) -> tuple[GlobPattern, ...]:
        if key not in data:
            return ()
        items = reader.strings(data[key], f"{path}.{key}")
        return tuple(reader.build(f"{path}.{key}[{i}]", make, p) for i, p in enumerate(items))

    def flag(key: str) -> bool | None:
        return reader.boolean(data[key], f"{path}.{key}") if key in data else None

    ranges: list[IndexRange] = []
    if "index" in data:
        index_path = f"{path}.index"
        targets = reader.mapping(data["index"], index_path, INDEX_TARGETS)
        for target, bounds in targets.items():
            target_path = f"{index_path}.{target}"
            limits = reader.mapping(bounds, target_path, _RANGE_KEYS)
            if not limits:
                reader.fail(target_path, "give min, max or both")
            low = reader.score(limits.get("min", 0), f"{target_path}.min")
            high = reader.score(limits.get("max", 100), f"{target_path}.max")
            ranges.append(reader.build(target_path, IndexRange, target, low, high))

    header: HeaderPattern | None = None
    if "header" in data:
        header_path = f"{path}.header"
        spec = reader.mapping(data["header"], header_path, _HEADER_KEYS)
        for key in _HEADER_KEYS:
            if key not in spec:
                reader.fail(f"{header_path}.{key}", "required")
        name = reader.string(spec["name"], f"{header_path}.name")
        regex = reader.string(spec["regex"], f"{header_path}.regex")
        header = reader.build(header_path, HeaderPattern.of, name, regex)

    sensitivity: tuple[str, ...] = ()
    if "sensitivity" in data:
        sensitivity = tuple(
            s.lower() for s in reader.strings(data["sensitivity"], f"{path}.sensitivity")
        )
        for i, item in enumerate(sensitivity):
            if item not in SENSITIVITY_VALUES:
                reader.fail(
                    f"{path}.sensitivity[{i}]",
                    f"unknown sensitivity {item!r} (known: {', '.join(sorted(SENSITIVITY_VALUES))})",
                )
    grade: tuple[str, ...] = ()
    if "grade" in data:
        grade = tuple(g.upper() for g in reader.strings(data["grade"], f"{path}.grade"))
        for i, item in enumerate(grade):
            if item not in GRADES:
                reader.fail(
                    f"{path}.grade[{i}]", f"unknown grade {item!r} (known: {', '.join(GRADES)})"
                )

    senders, recipients = addresses("sender"), addresses("recipient")
    lists, folders = globs("list", GlobPattern), globs("folder", _folder_glob)
    accounts = globs("account", GlobPattern)
    encrypted, signed, spam = flag("encrypted"), flag("signed"), flag("spam")
    return reader.build(
        path,
        lambda: Match(
            sender=senders,
            recipient=recipients,
            mailing_list=lists,
            folder=folders,
            account=accounts,
            sensitivity=sensitivity,
            encrypted=encrypted,
            signed=signed,
            spam=spam,
            index=tuple(ranges),
            grade=grade,
            header=header,
        ),
    )


def _rule(reader: _Reader, value: object, path: str, position: int, levels: LevelScale) -> Rule:
    data = reader.mapping(value, path, _RULE_KEYS)
    for key in ("level", "match"):
        if key not in data:
            reader.fail(f"{path}.{key}", "required")
    name = reader.string(data["name"], f"{path}.name") if "name" in data else f"rules[{position}]"
    level = reader.string(data["level"], f"{path}.level")
    if level not in levels:
        reader.fail(f"{path}.level", f"unknown level {level!r} (levels: {', '.join(levels.names)})")
    return Rule(name, level, _match(reader, data["match"], f"{path}.match"))


def policy_from_mapping(
    data: Mapping[str, object], *, path: str = "policy", lines: Mapping[str, int] | None = None
) -> Policy:
    """Build a ``Policy`` from the parsed ``policy:`` section.

    ``lines`` maps dotted paths (as in the error messages) to line numbers in the source file.
    An empty mapping gives the default policy.
    """
    reader = _Reader(lines)
    section = reader.mapping(data, path, _POLICY_KEYS)

    if "levels" in section:
        names = reader.strings(section["levels"], f"{path}.levels")
        levels = reader.build(f"{path}.levels", _level_scale, names)
        if "default_level" not in section:
            reader.fail(f"{path}.default_level", "required when levels are given")
    else:
        levels = LevelScale(DEFAULT_LEVELS)
    default_level = (
        reader.string(section["default_level"], f"{path}.default_level")
        if "default_level" in section
        else "internal"
    )
    if default_level not in levels:
        reader.fail(
            f"{path}.default_level",
            f"unknown level {default_level!r} (levels: {', '.join(levels.names)})",
        )

    relays = TrustedRelays()
    if "trusted_relays" in section:
        relay_path = f"{path}.trusted_relays"
        relay_data = reader.mapping(section["trusted_relays"], relay_path, _RELAY_KEYS)
        hosts = reader.strings(relay_data.get("hosts", []), f"{relay_path}.hosts")
        networks = reader.strings(relay_data.get("networks", []), f"{relay_path}.networks")
        for i, network in enumerate(networks):
            reader.build(f"{relay_path}.networks[{i}]", TrustedRelays.of, (), (network,))
        for i, host in enumerate(hosts):
            reader.build(f"{relay_path}.hosts[{i}]", TrustedRelays.of, (host,), ())
        relays = TrustedRelays.of(hosts, networks)

    authserv_ids = (
        reader.strings(section["authserv_ids"], f"{path}.authserv_ids")
        if "authserv_ids" in section
        else ()
    )
    known: tuple[AddressPattern, ...] = ()
    if "known_correspondents" in section:
        known_path = f"{path}.known_correspondents"
        known = tuple(
            reader.build(f"{known_path}[{i}]", AddressPattern, p)
            for i, p in enumerate(reader.strings(section["known_correspondents"], known_path))
        )
    spam_threshold = (
        reader.number(section["spam_threshold"], f"{path}.spam_threshold")
        if "spam_threshold" in section
        else 5.0
    )

    rules: list[Rule] = []
    if "rules" in section:
        rules_value = section["rules"]
        if not isinstance(rules_value, list):
            reader.fail(f"{path}.rules", f"expected a list of rules, got {kind(rules_value)}")
        for i, rule_value in enumerate(rules_value):
            rules.append(_rule(reader, rule_value, f"{path}.rules[{i}]", i, levels))

    return reader.build(
        path,
        lambda: Policy(
            levels=levels,
            default_level=default_level,
            trusted_relays=relays,
            authserv_ids=authserv_ids,
            known_correspondents=known,
            spam_threshold=spam_threshold,
            rules=tuple(rules),
        ),
    )
