"""The pure trust decision: every rule kind, IPv4/IPv6 networks, first-match order, revoked and
expired devices, and client-ID rules that can only lower a clearance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caliproxy.errors import PolicyError
from caliproxy.privacy.levels import LevelScale
from caliproxy.privacy.trust import (
    ClientIdRule,
    ConnectionFacts,
    Device,
    TrustPolicy,
    TrustRule,
    clearance,
    normalise_fingerprint,
    parse_tls_version,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LAPTOP = "ab" * 32
PHONE = "cd" * 32
STRANGER = "ef" * 32

DEVICES = (
    Device("laptop", LAPTOP),
    Device("phone", PHONE, expires=NOW + timedelta(days=30)),
)


def shown(fingerprint: str) -> str:
    """How reasons show a fingerprint: openssl's colon form (never mistaken for base64)."""
    return "sha256:" + ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2))


def facts(**overrides: object) -> ConnectionFacts:
    base = ConnectionFacts(listener="imaps", client_address="127.0.0.1", tls=True,
                           tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", account="alice")
    return replace(base, **overrides)  # type: ignore[arg-type]


def policy(*rules: TrustRule, devices: tuple[Device, ...] = DEVICES,
           id_rules: tuple[ClientIdRule, ...] = ()) -> TrustPolicy:
    return TrustPolicy(LevelScale(), rules, devices, id_rules)


def level(connection: ConnectionFacts, trust: TrustPolicy, now: datetime = NOW) -> str:
    return clearance(connection, trust, now=now).level


def test_no_rules_gives_every_connection_the_lowest_level() -> None:
    result = clearance(facts(cert_fingerprint=LAPTOP), TrustPolicy(), now=NOW)
    assert result.level == "public" and result.rule is None
    assert result.reasons[-1] == "no trust rule matched: the lowest level, public"


@pytest.mark.parametrize(
    ("rule", "connection", "expected"),
    [
        # listener
        (TrustRule.of("r", "secret", listeners=["imaps"]), facts(), "secret"),
        (TrustRule.of("r", "secret", listeners=["imaps"]), facts(listener="imap"), "public"),
        (TrustRule.of("r", "secret", listeners=["imap", "imaps"]), facts(listener="imap"), "secret"),
        # tls required / forbidden
        (TrustRule.of("r", "secret", tls=True), facts(), "secret"),
        (TrustRule.of("r", "secret", tls=True), facts(tls=False, tls_version=None), "public"),
        (TrustRule.of("r", "internal", tls=False), facts(tls=False, tls_version=None), "internal"),
        (TrustRule.of("r", "internal", tls=False), facts(), "public"),
        # tls minimum version
        (TrustRule.of("r", "secret", tls_min="1.3"), facts(tls_version="TLSv1.3"), "secret"),
        (TrustRule.of("r", "secret", tls_min="1.3"), facts(tls_version="TLSv1.2"), "public"),
        (TrustRule.of("r", "secret", tls_min="1.2"), facts(tls_version="TLSv1.3"), "secret"),
        (TrustRule.of("r", "secret", tls_min="TLSv1.2"), facts(tls_version="1.2"), "secret"),
        (TrustRule.of("r", "secret", tls_min="1.2"), facts(tls=False, tls_version=None), "public"),
        (TrustRule.of("r", "secret", tls_min="1.2"), facts(tls_version="SSLv3"), "public"),
        (TrustRule.of("r", "secret", tls_min="1.2"), facts(tls_version=None), "public"),
        # a named registered device
        (TrustRule.of("r", "secret", devices=["laptop"]), facts(cert_fingerprint=LAPTOP), "secret"),
        (TrustRule.of("r", "secret", devices=["laptop"]), facts(cert_fingerprint=PHONE), "public"),
        (TrustRule.of("r", "secret", devices=["laptop", "phone"]), facts(cert_fingerprint=PHONE), "secret"),
        (TrustRule.of("r", "secret", devices=["laptop"]), facts(cert_fingerprint=STRANGER), "public"),
        (TrustRule.of("r", "secret", devices=["laptop"]), facts(), "public"),
        # a registered device does not need the CA; the CA alone does not make a device
        (TrustRule.of("r", "secret", devices=["laptop"]),
         facts(cert_fingerprint=STRANGER, chains_to_device_ca=True), "public"),
        # any certificate from the device CA
        (TrustRule.of("r", "confidential", device_ca=True),
         facts(cert_fingerprint=STRANGER, chains_to_device_ca=True), "confidential"),
        (TrustRule.of("r", "confidential", device_ca=True),
         facts(cert_fingerprint=STRANGER, chains_to_device_ca=False), "public"),
        (TrustRule.of("r", "confidential", device_ca=True), facts(), "public"),
        # networks, IPv4
        (TrustRule.of("r", "internal", networks=["127.0.0.1/32"]), facts(), "internal"),
        (TrustRule.of("r", "internal", networks=["127.0.0.1/32"]), facts(client_address="127.0.0.2"), "public"),
        (TrustRule.of("r", "internal", networks=["10.0.0.0/8", "192.168.0.0/16"]),
         facts(client_address="192.168.7.9"), "internal"),
        (TrustRule.of("r", "internal", networks=["192.168.0.0/16"]), facts(client_address="192.169.0.1"), "public"),
        # an IPv4 client seen through a dual-stack socket
        (TrustRule.of("r", "internal", networks=["127.0.0.0/8"]),
         facts(client_address="::ffff:127.0.0.2"), "internal"),
        # networks, IPv6
        (TrustRule.of("r", "internal", networks=["2001:db8::/32"]), facts(client_address="2001:db8:1::5"), "internal"),
        (TrustRule.of("r", "internal", networks=["2001:db8::/32"]), facts(client_address="2001:db9::5"), "public"),
        (TrustRule.of("r", "internal", networks=["::1/128"]), facts(client_address="::1"), "internal"),
        (TrustRule.of("r", "internal", networks=["::1/128"]), facts(client_address="127.0.0.1"), "public"),
        (TrustRule.of("r", "internal", networks=["127.0.0.0/8"]), facts(client_address="::1"), "public"),
        (TrustRule.of("r", "internal", networks=["127.0.0.0/8"]), facts(client_address="not-an-ip"), "public"),
        # accounts
        (TrustRule.of("r", "secret", accounts=["alice"]), facts(), "secret"),
        (TrustRule.of("r", "secret", accounts=["ALICE"]), facts(), "secret"),
        (TrustRule.of("r", "secret", accounts=["bob", "*@example.org"]), facts(account="carol@example.org"), "secret"),
        (TrustRule.of("r", "secret", accounts=["bob"]), facts(), "public"),
        (TrustRule.of("r", "secret", accounts=["*"]), facts(account=None), "public"),
        # every condition of a rule must hold
        (TrustRule.of("r", "secret", listeners=["imaps"], tls_min="1.3", devices=["laptop"],
                      networks=["127.0.0.0/8"], accounts=["alice"]),
         facts(cert_fingerprint=LAPTOP), "secret"),
        (TrustRule.of("r", "secret", listeners=["imaps"], tls_min="1.3", devices=["laptop"],
                      networks=["127.0.0.0/8"], accounts=["alice"]),
         facts(cert_fingerprint=LAPTOP, account="bob"), "public"),
        # a rule without conditions matches everything
        (TrustRule.of("r", "internal"), facts(tls=False, account=None), "internal"),
    ],
)
def test_each_rule_kind(rule: TrustRule, connection: ConnectionFacts, expected: str) -> None:
    assert level(connection, policy(rule)) == expected


def test_first_matching_rule_wins_even_when_a_later_one_is_higher() -> None:
    rules = (
        TrustRule.of("outside", "public", networks=["127.0.0.2/32"]),
        TrustRule.of("laptop", "secret", devices=["laptop"]),
        TrustRule.of("loopback", "internal", networks=["127.0.0.0/8"]),
    )
    trust = policy(*rules)
    result = clearance(facts(client_address="127.0.0.2", cert_fingerprint=LAPTOP), trust, now=NOW)
    assert (result.level, result.rule) == ("public", "outside")
    result = clearance(facts(cert_fingerprint=LAPTOP), trust, now=NOW)
    assert (result.level, result.rule) == ("secret", "laptop")
    assert "rule 'outside' does not apply: client address 127.0.0.1 is not in 127.0.0.2/32" in result.reasons
    result = clearance(facts(), trust, now=NOW)
    assert (result.level, result.rule) == ("internal", "loopback")
    assert any(r.startswith("rule 'laptop' does not apply: no registered device") for r in result.reasons)


def test_a_revoked_device_is_unknown_to_device_and_device_ca_rules() -> None:
    revoked = (Device("laptop", LAPTOP, revoked=True), DEVICES[1])
    rules = (TrustRule.of("laptop", "secret", devices=["laptop"]),
             TrustRule.of("ca", "confidential", device_ca=True))
    connection = facts(cert_fingerprint=LAPTOP, chains_to_device_ca=True)
    assert level(connection, policy(*rules)) == "secret"
    result = clearance(connection, policy(*rules, devices=revoked), now=NOW)
    assert result.level == "public"
    assert f"client certificate {shown(LAPTOP)} is device 'laptop', which is revoked: treated as unknown" \
        in result.reasons


def test_a_removed_device_is_unknown() -> None:
    rule = TrustRule.of("laptop", "secret", devices=["phone"])
    assert level(facts(cert_fingerprint=LAPTOP), policy(rule, devices=DEVICES[1:])) == "public"


def test_an_expired_registration_is_unknown() -> None:
    rule = TrustRule.of("phone", "secret", devices=["phone"])
    connection = facts(cert_fingerprint=PHONE)
    assert level(connection, policy(rule), NOW) == "secret"
    later = NOW + timedelta(days=31)
    result = clearance(connection, policy(rule), now=later)
    assert result.level == "public"
    assert any("registration expired at" in r for r in result.reasons)


def test_an_expired_certificate_is_no_device_even_when_registered_and_from_the_ca() -> None:
    rules = (TrustRule.of("laptop", "secret", devices=["laptop"]),
             TrustRule.of("ca", "confidential", device_ca=True))
    connection = facts(cert_fingerprint=LAPTOP, chains_to_device_ca=True,
                       cert_not_after=NOW - timedelta(seconds=1))
    result = clearance(connection, policy(*rules), now=NOW)
    assert result.level == "public"
    assert any("expired at 2025-06-01T11:59:59Z: not a device" in r for r in result.reasons)
    assert level(replace(connection, cert_not_after=NOW + timedelta(days=1)), policy(*rules)) == "secret"


def test_client_id_rules_only_lower() -> None:
    rules = (TrustRule.of("laptop", "secret", devices=["laptop"]),)
    id_rules = (ClientIdRule.of("webmail", "public", {"name": "*webmail*"}),
                ClientIdRule.of("claims-trust", "secret", {"name": "trusted*"}))
    trust = policy(*rules, id_rules=id_rules)
    laptop = facts(cert_fingerprint=LAPTOP)
    assert level(laptop, trust) == "secret"
    assert level(replace(laptop, client_id={"Name": "Roundcube Webmail"}), trust) == "public"
    # A client that claims to be trusted gains nothing.
    assert level(replace(facts(), client_id={"name": "trusted-client"}), trust) == "public"
    result = clearance(replace(facts(), client_id={"name": "trusted-client"}), trust, now=NOW)
    assert "client-ID rule 'claims-trust' matched (name='trusted-client'): secret would not lower public" \
        in result.reasons
    # Every field given must be declared; NIL values match nothing.
    both = ClientIdRule.of("both", "public", {"name": "x*", "os": "linux"})
    trust = policy(*rules, id_rules=(both,))
    assert level(replace(laptop, client_id={"name": "xmail"}), trust) == "secret"
    assert level(replace(laptop, client_id={"name": "xmail", "os": None}), trust) == "secret"
    assert level(replace(laptop, client_id={"name": "xmail", "os": "Linux"}), trust) == "public"


def test_several_client_id_rules_take_the_lowest() -> None:
    id_rules = (ClientIdRule.of("a", "confidential", {"name": "*"}),
                ClientIdRule.of("b", "internal", {"vendor": "acme"}))
    trust = policy(TrustRule.of("all", "secret"), id_rules=id_rules)
    assert level(facts(client_id={"name": "m", "vendor": "ACME"}), trust) == "internal"
    assert level(facts(client_id={"name": "m"}), trust) == "confidential"
    assert level(facts(client_id=None), trust) == "secret"


LEVELS = ("public", "internal", "confidential", "secret")


@given(
    rule_level=st.sampled_from(LEVELS),
    id_level=st.sampled_from(LEVELS),
    declared=st.dictionaries(st.sampled_from(["name", "vendor", "os", "x"]),
                             st.one_of(st.none(), st.text(max_size=12)), max_size=4),
    glob=st.sampled_from(["*", "a*", "*b*", "mail"]),
)
def test_property_an_id_never_raises_a_clearance(rule_level: str, id_level: str,
                                                 declared: dict[str, str | None], glob: str) -> None:
    trust = policy(TrustRule.of("all", rule_level),
                   id_rules=(ClientIdRule.of("id", id_level, {"name": glob}),))
    scale = LevelScale()
    without = level(facts(), trust)
    with_id = level(facts(client_id=declared), trust)
    assert scale.rank(with_id) <= scale.rank(without) == scale.rank(rule_level)


def test_reasons_name_the_transport_certificate_and_rule_and_quote_client_strings() -> None:
    trust = policy(TrustRule.of("laptop", "secret", devices=["laptop"]))
    result = clearance(facts(cert_fingerprint=LAPTOP, account="al\nice", sasl_mechanism="PLAIN"),
                       trust, now=NOW)
    assert result.reasons[0] == ("listener 'imaps', client 127.0.0.1, TLS 1.3 "
                                 "(TLS_AES_256_GCM_SHA384)")
    assert result.reasons[1] == "account 'al\\nice' (PLAIN)"
    assert f"client certificate {shown(LAPTOP)} is registered device 'laptop'" in result.reasons
    assert "rule 'laptop' matched (device laptop): level secret" in result.reasons
    assert all("\n" not in reason for reason in result.reasons)


def test_naive_now_is_utc() -> None:
    rule = TrustRule.of("phone", "secret", devices=["phone"])
    naive = (NOW + timedelta(days=31)).replace(tzinfo=None)
    assert level(facts(cert_fingerprint=PHONE), policy(rule), naive) == "public"


@pytest.mark.parametrize("text", ["sha256:" + "AB" * 32, ":".join(["ab"] * 32), "AB" * 32,
                                  "SHA256 Fingerprint=" + ":".join(["AB"] * 32)])
def test_fingerprint_spellings(text: str) -> None:
    assert normalise_fingerprint(text) == LAPTOP


@pytest.mark.parametrize("text", ["ab" * 31, "zz" * 32, "", "sha1:" + "ab" * 32])
def test_bad_fingerprints(text: str) -> None:
    with pytest.raises(PolicyError):
        normalise_fingerprint(text)


@pytest.mark.parametrize(("text", "version"), [("1.3", "1.3"), ("TLSv1.2", "1.2"), ("tls1.0", "1.0"),
                                               ("TLS 1.1", "1.1")])
def test_tls_versions(text: str, version: str) -> None:
    assert parse_tls_version(text) == version


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrustRule.of("r", "secret", networks=["10.0.0.0/33"]), "invalid network"),
        (lambda: TrustRule.of("r", "secret", tls_min="1.4"), "unknown TLS version"),
        (lambda: TrustRule.of("r", "secret", tls=False, tls_min="1.2"), "contradicts"),
        (lambda: TrustRule.of("r", "secret", devices=["laptop"], device_ca=True), "not both"),
        (lambda: policy(TrustRule.of("r", "top")), "unknown level 'top'"),
        (lambda: policy(TrustRule.of("r", "secret", devices=["tablet"])), "not in the device registry"),
        (lambda: policy(TrustRule.of("r", "secret"), TrustRule.of("r", "public")), "two trust rules"),
        (lambda: policy(devices=(Device("a", LAPTOP), Device("b", LAPTOP))), "same fingerprint"),
        (lambda: policy(devices=(Device("a", LAPTOP), Device("a", PHONE))), "registered twice"),
        (lambda: Device("bad name", LAPTOP), "device name"),
        (lambda: ClientIdRule.of("i", "public", {}), "at least one field"),
    ],
)
def test_invalid_policies_are_refused(make: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        make()  # type: ignore[operator]
