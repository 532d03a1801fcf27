"""The policy section of the YAML configuration: strict, every error names its dotted path and line,
and the example configuration's policy loads and judges messages as its comments say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from caliproxy.errors import ConfigError
from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.levels import DEFAULT_LEVELS
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.verdict import judge

from . import corpus as c
from .conftest import build_message

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "caliproxy.example.yaml"


def test_an_empty_section_is_the_default_policy() -> None:
    policy = policy_from_mapping({})
    assert policy == Policy()
    assert policy.levels.names == DEFAULT_LEVELS
    assert policy.default_level == "internal"
    assert not policy.trusted_relays.configured


def _error(data: Any, lines: dict[str, int] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        policy_from_mapping(data, lines=lines)
    return str(caught.value)


RULE = {"level": "secret", "match": {"sender": "a@b.example"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"level": ["a"]}, "policy.level: unknown key"),
        ({"trusted_relays": {"host": ["x"]}}, "policy.trusted_relays.host: unknown key"),
        (
            {"rules": [RULE, RULE, {"level": "secret", "match": {"sendr": ["x"]}}]},
            "policy.rules[2].match.sendr: unknown key",
        ),
        (
            {"rules": [{"level": "secret", "match": {"sender": ["a b"]}}]},
            "policy.rules[0].match.sender[0]: invalid address pattern",
        ),
        (
            {"rules": [{"level": "secret", "match": {"sender": "@x"}}]},
            "policy.rules[0].match.sender[0]: invalid address pattern",
        ),
        (
            {"rules": [{"level": "top", "match": {"spam": True}}]},
            "policy.rules[0].level: unknown level 'top'",
        ),
        ({"rules": [{"match": {"spam": True}}]}, "policy.rules[0].level: required"),
        ({"rules": [{"level": "secret"}]}, "policy.rules[0].match: required"),
        (
            {"rules": [{"level": "secret", "match": {}}]},
            "policy.rules[0].match: a rule needs at least one condition",
        ),
        (
            {"rules": [{"level": "secret", "match": {"sender": []}}]},
            "policy.rules[0].match: a rule needs at least one condition",
        ),
        (
            {"rules": [{"level": "secret", "match": {"spam": "yes"}}]},
            "policy.rules[0].match.spam: expected true or false",
        ),
        (
            {"rules": [{"level": "secret", "match": {"sensitivity": ["secret"]}}]},
            "policy.rules[0].match.sensitivity[0]: unknown sensitivity 'secret'",
        ),
        (
            {"rules": [{"level": "secret", "match": {"grade": ["F"]}}]},
            "policy.rules[0].match.grade[0]: unknown grade 'F'",
        ),
        (
            {"rules": [{"level": "secret", "match": {"index": {"speed": {"min": 1}}}}]},
            "policy.rules[0].match.index.speed: unknown key",
        ),
        (
            {
                "rules": [
                    {"level": "secret", "match": {"index": {"aggregate": {"min": 50, "max": 40}}}}
                ]
            },
            "policy.rules[0].match.index.aggregate: index range",
        ),
        (
            {"rules": [{"level": "secret", "match": {"index": {"aggregate": {"max": 101}}}}]},
            "policy.rules[0].match.index.aggregate.max: expected a whole number from 0 to 100",
        ),
        (
            {"rules": [{"level": "secret", "match": {"index": {"aggregate": {}}}}]},
            "policy.rules[0].match.index.aggregate: give min, max or both",
        ),
        (
            {
                "rules": [
                    {"level": "secret", "match": {"header": {"name": "Subject", "regex": "("}}}
                ]
            },
            "policy.rules[0].match.header: invalid regular expression",
        ),
        (
            {"rules": [{"level": "secret", "match": {"header": {"regex": "x"}}}]},
            "policy.rules[0].match.header.name: required",
        ),
        ({"rules": {"level": "secret"}}, "policy.rules: expected a list of rules"),
        ({"trusted_relays": {"networks": ["192.0.2.0/33"]}}, "policy.trusted_relays.networks[0]:"),
        (
            {"trusted_relays": {"hosts": "mx.example.org", "networks": [10]}},
            "policy.trusted_relays.networks[0]: expected a non-empty string",
        ),
        ({"levels": ["low", "high"]}, "policy.default_level: required when levels are given"),
        (
            {"levels": ["low", "low"], "default_level": "low"},
            "policy.levels: duplicate level names",
        ),
        (
            {"levels": ["low", "semi;colon"], "default_level": "low"},
            "policy.levels: level name 'semi;colon'",
        ),
        ({"levels": ["low", "x" * 25], "default_level": "low"}, "policy.levels: level name"),
        ({"default_level": "top"}, "policy.default_level: unknown level 'top'"),
        ({"spam_threshold": "high"}, "policy.spam_threshold: expected a number"),
        (
            {"known_correspondents": [None]},
            "policy.known_correspondents[0]: expected a non-empty string",
        ),
        (["not", "a", "mapping"], "policy: expected a mapping"),
    ],
)
def test_invalid_policies_name_the_dotted_path(data: Any, message: str) -> None:
    assert message in _error(data)


def test_errors_carry_the_line_of_the_path_or_its_nearest_parent() -> None:
    data = {"rules": [{"level": "secret", "match": {"sendr": "x"}}]}
    lines = {"policy": 10, "policy.rules": 20, "policy.rules[0]": 21, "policy.rules[0].match": 23}
    assert _error(data, lines).startswith("policy.rules[0].match.sendr (line 23): unknown key")


def test_scalars_are_one_item_lists_and_values_are_normalised() -> None:
    policy = policy_from_mapping(
        {
            "authserv_ids": "MX.Example.Org",
            "known_correspondents": "Bücher.Example",
            "rules": [
                {
                    "level": "secret",
                    "match": {"sensitivity": "Private", "grade": "e", "folder": "inbox"},
                }
            ],
        }
    )
    assert policy.trusts_authserv_id("mx.example.org")
    assert policy.is_known("alice@xn--bcher-kva.example")
    match = policy.rules[0].match
    assert (match.sensitivity, match.grade) == (("private",), ("E",))
    assert match.folder[0].matches("INBOX") and not match.folder[0].matches("inbox/sub")


# --- the example configuration ------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_policy() -> Policy:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return policy_from_mapping(document["policy"])


def test_the_example_policy_loads_with_every_key(example_policy: Policy) -> None:
    section = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["policy"]
    assert set(section) == {
        "levels",
        "default_level",
        "trusted_relays",
        "authserv_ids",
        "known_correspondents",
        "spam_threshold",
        "rules",
    }
    used = {key for rule in section["rules"] for key in rule["match"]}
    # Every match key appears in a rule; "signed" is documented beside "encrypted".
    assert used | {"signed"} == {
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
    }
    assert example_policy.levels.names == ("public", "internal", "confidential", "secret")
    assert example_policy.header_names == frozenset({"subject"})


def _level(policy: Policy, *fields: str, **context: str) -> tuple[str, list[str]]:
    _, verdict = judge(build_message(*fields), policy, **context)
    return verdict.level.level, [rule.name for rule in verdict.level.fired]


def test_the_example_policy_judges_as_its_comments_say(example_policy: Policy) -> None:
    trace = (c.DOVECOT_LMTP_SOCKET, c.TRUSTED_AR_PASS, c.TRUSTED_DMARC_PASS, c.POSTFIX_TLS13)
    ordinary = (*trace, c.FROM_ALICE, "To: bob@example.org")

    assert _level(example_policy, *ordinary) == ("internal", [])
    assert _level(example_policy, *trace, "From: dr@clinic.example", "To: bob@example.org") == (
        "secret",
        ["medical"],
    )
    assert _level(example_policy, *ordinary, "Sensitivity: Personal") == (
        "confidential",
        ["private-sensitivity"],
    )
    assert _level(example_policy, *ordinary, account="bob@example.org", mailbox="Board/2024") == (
        "confidential",
        ["board-folder"],
    )
    assert _level(
        example_policy, *trace, c.FROM_ALICE, "To: payroll@example.org", "Subject: Payslip May"
    ) == (
        "secret",
        ["payroll"],
    )
    assert _level(example_policy, *ordinary, "List-Id: Announcements <announce.example.org>") == (
        "public",
        ["announcements"],
    )
    # No believed hop, no believed authentication, an unknown sender: grade E.
    assert _level(example_policy, "From: x@unknown.example", "To: y@unknown.example") == (
        "public",
        ["poorly-protected"],
    )
