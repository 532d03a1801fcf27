"""The trust: and devices: sections, tls.client_ca and the PROXY-protocol keys: strict, with
errors naming the dotted path and line, and safe defaults when absent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from caliproxy.config import parse_config
from caliproxy.errors import ConfigError
from caliproxy.privacy.levels import LevelScale
from caliproxy.privacy.trust import ConnectionFacts, clearance
from caliproxy.trust_config import trust_from_mapping

FP = "ab" * 32

BASE = """\
listeners:
  - name: imaps
    port: 9993
    tls: none
    allow_plaintext_login: true
upstream:
  imap:
    host: 127.0.0.1
    port: 993
"""

TRUST = """\
trust:
  rules:
    - name: laptop
      level: secret
      match:
        listener: imaps
        tls_min: 1.2
        device: laptop
        network: [127.0.0.0/8, "::1/128"]
        account: alice
    - level: internal
      match: {network: 10.0.0.0/8}
  client_id:
    - name: webmail
      level: public
      match: {name: "*webmail*"}
devices:
  - name: laptop
    fingerprint: "{laptop}"
    expires: 2030-01-31
  - name: old
    fingerprint: "{old}"
    revoked: true
""".replace("{laptop}", ":".join(["AB"] * 32)).replace("{old}", "cd" * 32)


def test_sections_absent_give_the_lowest_level_to_everyone() -> None:
    config = parse_config(BASE)
    assert config.trust.rules == () and config.devices == () and config.trust.devices == ()
    assert config.proxy_protocol_from == ()
    assert not config.listeners[0].proxy_protocol
    facts = ConnectionFacts("imaps", "127.0.0.1", tls=True, tls_version="1.3", account="alice")
    assert clearance(facts, config.trust, now=datetime.now(UTC)).level == "public"


def test_a_full_trust_section_loads() -> None:
    config = parse_config(BASE + TRUST)
    trust = config.trust
    assert [r.name for r in trust.rules] == ["laptop", "rules[1]"]
    first = trust.rules[0]
    assert first.listeners == ("imaps",) and first.tls_min == "1.2" and first.devices == ("laptop",)
    assert [str(n) for n in first.networks] == ["127.0.0.0/8", "::1/128"]
    assert [d.name for d in config.devices] == ["laptop", "old"] and config.devices == trust.devices
    laptop = config.devices[0]
    assert laptop.fingerprint == FP
    assert laptop.expires == datetime(2030, 2, 1, tzinfo=UTC)  # through the end of Jan 31
    assert config.devices[1].revoked
    assert trust.client_id_rules[0].name == "webmail"
    facts = ConnectionFacts("imaps", "::1", tls=True, tls_version="TLSv1.3", cert_fingerprint=FP,
                            account="Alice")
    assert clearance(facts, trust, now=datetime(2030, 1, 31, 23, tzinfo=UTC)).level == "secret"
    assert clearance(facts, trust, now=datetime(2030, 2, 1, 0, tzinfo=UTC)).level == "public"


def test_trust_levels_are_the_policy_levels() -> None:
    text = BASE + "policy:\n  levels: [open, closed]\n  default_level: closed\n" + \
        "trust:\n  rules:\n    - {level: closed}\n"
    config = parse_config(text)
    assert config.trust.levels.names == ("open", "closed")
    assert config.trust.default_level == "open"
    with pytest.raises(ConfigError, match=r"trust.rules\[0\].level \(line 15\): unknown level 'secret'"):
        parse_config(text.replace("{level: closed}", "{level: secret}"))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("trust:\n  rule: []\n", r"trust.rule \(line 11\): unknown key"),
        ("trust:\n  rules:\n    - level: secret\n      match: {netwrk: 10.0.0.0/8}\n",
         r"trust.rules\[0\].match.netwrk \(line 13\): unknown key"),
        ("trust:\n  rules:\n    - level: secret\n      match: {network: [10.0.0.0/33]}\n",
         r"trust.rules\[0\].match.network\[0\] \(line 13\): invalid network"),
        ("trust:\n  rules:\n    - level: secret\n      match: {tls_min: 1.4}\n",
         r"trust.rules\[0\].match.tls_min \(line 13\): unknown TLS version"),
        ("trust:\n  rules:\n    - level: secret\n      match: {device: tablet}\n",
         r"trust.rules\[0\].match.device \(line 13\): unknown device 'tablet' \(devices: none registered\)"),
        ("trust:\n  rules:\n    - level: secret\n      match: {listener: imap}\n",
         r"trust.rules\[0\].match.listener: no listener is named 'imap'"),
        ("trust:\n  rules:\n    - level: secret\n      match: {device_ca: yes please}\n",
         r"trust.rules\[0\].match.device_ca \(line 13\): expected true or false"),
        ("trust:\n  rules:\n    - match: {}\n", r"trust.rules\[0\].level \(line 12\): required"),
        ("trust:\n  rules:\n    - {name: a, level: public}\n    - {name: a, level: public}\n",
         r"trust.rules\[1\].name \(line 13\): rule name 'a' is already used by trust.rules\[0\]"),
        ("trust:\n  client_id:\n    - {level: public, match: {}}\n",
         r"trust.client_id\[0\].match \(line 12\): expected a mapping of ID field names"),
        ("devices:\n  - name: a\n", r"devices\[0\].fingerprint \(line 11\): required"),
        ("devices:\n  - {name: a, fingerprint: 'xyz'}\n",
         r"devices\[0\].fingerprint \(line 11\): 'xyz' is not a SHA-256 fingerprint"),
        ("devices:\n  - {name: a, fingerprint: 12:34}\n",
         r"devices\[0\].fingerprint \(line 11\): expected a quoted string"),
        (f"devices:\n  - {{name: a, fingerprint: '{FP}'}}\n  - {{name: b, fingerprint: '{FP}'}}\n",
         r"devices\[1\].fingerprint \(line 12\): the same certificate is already registered as 'a'"),
        (f"devices:\n  - {{name: a, fingerprint: '{FP}', expires: soon}}\n",
         r"devices\[0\].expires \(line 11\): expected a date"),
        (f"devices:\n  - {{name: a b, fingerprint: '{FP}'}}\n", r"devices\[0\] \(line 11\): device name"),
        ("devices: {a: 1}\n", r"devices \(line 10\): expected a list of devices"),
        ("proxy_protocol_from: [10.0.0.0/33]\n", r"<config>:10: proxy_protocol_from\[0\]: must be an IP network"),
    ],
)
def test_bad_trust_configuration_names_path_and_line(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(BASE + section)


def test_proxy_protocol_listener_needs_allowed_balancers() -> None:
    text = BASE.replace("    tls: none\n", "    tls: none\n    proxy_protocol: true\n")
    with pytest.raises(ConfigError, match=r"<config>:5: listeners\[0\].proxy_protocol: needs proxy_protocol_from"):
        parse_config(text)
    top = parse_config(text + "proxy_protocol_from: [10.0.0.5/32, '::1']\n")
    assert top.listeners[0].proxy_protocol_from == ("10.0.0.5/32", "::1")
    own = parse_config(text.replace("proxy_protocol: true\n",
                                    "proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1]\n")
                       + "proxy_protocol_from: [10.0.0.5/32]\n")
    assert own.listeners[0].proxy_protocol_from == ("127.0.0.1",)


def test_tls_client_ca_is_checked_and_resolved(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    text = BASE.replace("tls: none", "tls: implicit") + \
        "tls:\n  certificate: cert.pem\n  key: key.pem\n  client_ca: ca.pem\n"
    config = parse_config(text, base=tmp_path)
    assert config.tls is not None and config.tls.client_ca == tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=r"tls.client_ca: cannot read"):
        parse_config(text.replace("client_ca: ca.pem", "client_ca: missing.pem"), base=tmp_path)
    assert parse_config(text.replace("  client_ca: ca.pem\n", ""), base=tmp_path).tls.client_ca is None  # type: ignore[union-attr]


def test_mapping_loader_works_without_yaml() -> None:
    trust = trust_from_mapping(
        {"rules": [{"name": "r", "level": "b", "match": {"tls": True, "device_ca": True}}]},
        [{"name": "d", "fingerprint": FP, "expires": "2030-01-01T12:00:00+01:00"}],
        levels=LevelScale(("a", "b")),
    )
    assert trust.rules[0].tls is True and trust.rules[0].device_ca
    assert trust.devices[0].expires == datetime(2030, 1, 1, 11, tzinfo=UTC)
    assert trust_from_mapping(None).rules == ()
    quoted = trust_from_mapping(None, [{"name": "d", "fingerprint": FP, "expires": "2030-01-31"}])
    assert quoted.devices[0].expires == datetime(2030, 2, 1, tzinfo=UTC)  # a whole day, as unquoted
