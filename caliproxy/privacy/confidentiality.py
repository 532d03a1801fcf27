"""Confidentiality levels: which of the policy's rules a message matches, and the level it takes.

A message takes the highest level among the rules that fire, else the policy's default level.
Every fired rule is reported with the conditions that held, so ``caliproxy explain`` can say why.

Pure module: standard library only plus ``caliproxy.privacy.*``; no IO, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from caliproxy.errors import PolicyError
from caliproxy.privacy.addresses import AddressPattern, GlobPattern
from caliproxy.privacy.features import MessageFeatures
from caliproxy.privacy.index import PrivacyIndex
from caliproxy.privacy.policy import Match, Policy


@dataclass(frozen=True)
class FiredRule:
    """A rule that matched, the level it proposes, and why each of its conditions held."""

    name: str
    level: str
    because: tuple[str, ...]


@dataclass(frozen=True)
class LevelVerdict:
    """The confidentiality level of one message and the rules behind it."""

    level: str
    #: True when no rule fired and the policy default applied.
    default: bool
    fired: tuple[FiredRule, ...]


def _first_address_match(
    patterns: tuple[AddressPattern, ...], addresses: Iterable[str]
) -> tuple[str, str] | None:
    for address in addresses:
        for pattern in patterns:
            if pattern.matches(address):
                return address, pattern.text
    return None


def _glob_match(patterns: tuple[GlobPattern, ...], value: str) -> str | None:
    for pattern in patterns:
        if pattern.matches(value):
            return pattern.text
    return None


def mailbox_key(mailbox: str) -> str:
    """RFC 3501 §5.1: the name INBOX is case-insensitive; every other mailbox name is not."""
    return "INBOX" if mailbox.upper() == "INBOX" else mailbox


def _match(match: Match, features: MessageFeatures, index: PrivacyIndex) -> tuple[str, ...] | None:
    """The reasons every condition of ``match`` holds, or None when one does not."""
    because: list[str] = []
    if match.sender:
        hit = _first_address_match(
            match.sender, features.from_addresses + features.sender_addresses
        )
        if hit is None:
            return None
        because.append(f"sender {hit[0]} matches {hit[1]}")
    if match.recipient:
        hit = _first_address_match(match.recipient, features.recipients)
        if hit is None:
            return None
        because.append(f"recipient {hit[0]} matches {hit[1]}")
    if match.mailing_list:
        pattern = _glob_match(match.mailing_list, features.list_id) if features.list_id else None
        if pattern is None:
            return None
        because.append(f"list {features.list_id} matches {pattern}")
    if match.folder:
        pattern = _glob_match(match.folder, mailbox_key(features.mailbox))
        if pattern is None:
            return None
        because.append(f"folder {features.mailbox} matches {pattern}")
    if match.account:
        pattern = _glob_match(match.account, features.account)
        if pattern is None:
            return None
        because.append(f"account {features.account} matches {pattern}")
    if match.sensitivity:
        if features.sensitivity not in match.sensitivity:
            return None
        because.append(f"sensitivity {features.sensitivity}")
    if match.encrypted is not None:
        if features.encrypted != match.encrypted:
            return None
        because.append(f"encrypted is {str(features.encrypted).lower()}")
    if match.signed is not None:
        if features.signed != match.signed:
            return None
        because.append(f"signed is {str(features.signed).lower()}")
    if match.spam is not None:
        # Only believed spam headers count; a message no trusted filter called spam is not spam.
        is_spam = index.evidence.spam is True
        if is_spam != match.spam:
            return None
        because.append(f"spam is {str(is_spam).lower()}")
    for condition in match.index:
        value = index.score(condition.target)
        if not condition.minimum <= value <= condition.maximum:
            return None
        because.append(f"{condition.target} {value} in {condition.minimum}..{condition.maximum}")
    if match.grade:
        if index.grade not in match.grade:
            return None
        because.append(f"grade {index.grade}")
    if match.header is not None:
        header = match.header
        if header.name not in features.kept_header_names:
            # Not knowing the value must not read as "no match": a rule that raises the level
            # would silently not fire. The caller re-extracts with policy.header_names.
            raise PolicyError(
                f"features were extracted without the {header.name!r} header a rule reads; "
                "pass policy.header_names as MessageContext.keep_headers"
            )
        hit_value = next(
            (v for v in features.header_values(header.name) if header.regex.search(v)), None
        )
        if hit_value is None:
            return None
        because.append(f"header {header.name} matches /{header.regex.pattern}/")
    return tuple(because)


def confidentiality(features: MessageFeatures, index: PrivacyIndex, policy: Policy) -> LevelVerdict:
    """The level of a message under ``policy``, with every rule that fired."""
    fired = tuple(
        FiredRule(rule.name, rule.level, because)
        for rule in policy.rules
        if (because := _match(rule.match, features, index)) is not None
    )
    if not fired:
        return LevelVerdict(policy.default_level, True, ())
    level = max((rule.level for rule in fired), key=policy.levels.rank)
    return LevelVerdict(level, False, fired)
