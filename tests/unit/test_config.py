"""Configuration: strict YAML with errors that name file, line and dotted path; the example loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caliproxy.config import load_config, parse_config
from caliproxy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "caliproxy.example.yaml"

MINIMAL = """\
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


def test_example_config_loads_and_documents_every_key() -> None:
    config = parse_config(EXAMPLE.read_text(), source=str(EXAMPLE), check_files=False)
    assert [listener.name for listener in config.listeners] == ["imaps", "imap", "submission"]
    assert config.upstream_smtp is not None and config.upstream_smtp.port == 465
    assert config.upstream_imap.tls == "implicit" and config.upstream_imap.ca_file is None
    assert config.limits.idle_timeout == 1800
    assert config.header.name == "X-Caliproxy-Privacy"


def test_minimal_config_has_safe_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.listeners[0].address == "127.0.0.1"
    assert config.upstream_imap.tls == "implicit"  # upstream TLS unless said otherwise
    assert config.upstream_imap.verify_name == "127.0.0.1"
    assert config.limits.preauth_timeout == 60
    assert config.header.name == "X-Caliproxy-Privacy" and config.header.spoofed == "X-Caliproxy-Spoofed"


def test_the_header_name_is_configurable() -> None:
    config = parse_config(MINIMAL + "header:\n  name: X-Home-Privacy\n")
    assert (config.header.name, config.header.spoofed) == ("X-Home-Privacy", "X-Home-Spoofed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "unknown: 1\n", r"<config>:10: unknown: unknown key"),
        (MINIMAL.replace("port: 9993", "port: 99999"), r"<config>:3: listeners\[0\].port: must be a port"),
        (MINIMAL.replace("port: 9993", "port: '9993'"), r"listeners\[0\].port: must be a int"),
        (MINIMAL.replace("tls: none", "tls: maybe"), r"listeners\[0\].tls: must be one of"),
        (MINIMAL.replace("host: 127.0.0.1", "hots: x"), r"upstream.imap.hots: unknown key"),
        (MINIMAL + "limits:\n  idle_timeout: 60\n", r"limits.idle_timeout: must be at least 1800"),
        (MINIMAL.replace("tls: none", "tls: implicit"), r"needs the top-level tls"),
        (MINIMAL + "header:\n  name: X-Mine-Spoofed\n", r"<config>:11: header.name: .* must not end in"),
        (MINIMAL + "header:\n  name: Content-Type\n", r"header.name: .* mail software relies on"),
        (MINIMAL + "header:\n  nom: X\n", r"header.nom: unknown key"),
        ("listeners: [\n", r"not valid YAML"),
        ("", r"the file is empty"),
    ],
)
def test_bad_config_is_rejected_with_path_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_all_errors_are_reported_together() -> None:
    text = MINIMAL.replace("port: 9993", "port: -1").replace("tls: none", "tls: bogus") + "extra: 1\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert len(str(info.value).splitlines()) == 3


def test_proxy_protocol_is_refused_on_an_smtp_listener() -> None:
    text = MINIMAL.replace("listeners:\n", "listeners:\n  - {name: sub, protocol: smtp, port: 9587, tls: none,"
                           " proxy_protocol: true, proxy_protocol_from: [10.0.0.0/8]}\n")
    text += "  smtp:\n    host: 127.0.0.1\n    port: 587\n"
    with pytest.raises(ConfigError, match=r"<config>:2: listeners\[0\].proxy_protocol: is supported on imap"):
        parse_config(text)
    parse_config(text.replace("proxy_protocol: true", "proxy_protocol: false"))


def test_duplicate_listener_address_is_an_error() -> None:
    text = MINIMAL.replace("listeners:\n", "listeners:\n  - {name: other, port: 9993, tls: none}\n")
    with pytest.raises(ConfigError, match="also used by"):
        parse_config(text)


def test_unreadable_certificate_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "tls:\n  certificate: missing.pem\n  key: missing-key.pem\n")
    with pytest.raises(ConfigError, match=r"tls.certificate: cannot read .*missing.pem"):
        load_config(path)


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "oops: true\n")
    run = [sys.executable, "-m", "caliproxy", "check-config"]
    ok = subprocess.run(run + [str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run(run + [str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1 and "oops: unknown key" in failed.stderr
    version = subprocess.run([sys.executable, "-m", "caliproxy", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("caliproxy ")


def test_example_policy_is_loaded_and_judges_the_samples() -> None:
    from caliproxy.demo.seed import samples
    from caliproxy.privacy.verdict import judge

    config = parse_config(EXAMPLE.read_text(), source=str(EXAMPLE), check_files=False)
    policy = config.policy
    assert policy.levels.names == ("public", "internal", "confidential", "secret")
    assert policy.rules and policy.authserv_ids == ("mx.example.org",)
    levels = {sample.name: judge(sample.raw, policy)[1].level.level for sample in samples()}
    assert set(levels.values()) <= set(policy.levels.names)
    assert levels["pgp_mime"] == levels["smime"] == "secret"  # rule end-to-end-encrypted
    assert levels["private"] == "confidential"  # rule private-sensitivity


def test_an_invalid_policy_does_not_make_the_trust_rules_levels_unknown() -> None:
    """Trust rules naming the policy's own levels are not reported when the policy is broken,
    and errors of other sections (metrics too) come in the same report."""
    text = MINIMAL + ("policy:\n  levels: [open, closed]\n  default_level: nope\n"
                      "trust:\n  rules:\n    - {name: all, level: closed}\n"
                      "metrics:\n  port: 99999\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    report = str(info.value)
    assert "policy.default_level" in report and "metrics.port" in report
    assert "trust" not in report, report
    parse_config(text.replace("default_level: nope", "default_level: open").replace("99999", "9465"))


def test_policy_errors_name_their_path_and_line() -> None:
    text = MINIMAL + "policy:\n  default_level: nope\n"
    with pytest.raises(ConfigError, match=r"policy.default_level.*line 11.*unknown level"):
        parse_config(text)


def test_explain_reads_a_file_or_standard_input(tmp_path: Path) -> None:
    from caliproxy.demo.seed import pgp_mime

    message = tmp_path / "m.eml"
    message.write_bytes(pgp_mime())
    run = [sys.executable, "-m", "caliproxy", "explain", "-c", str(EXAMPLE)]
    from_file = subprocess.run(run + [str(message)], capture_output=True, text=True)
    from_stdin = subprocess.run(run + ["-"], input=pgp_mime().decode(), capture_output=True, text=True)
    assert from_file.returncode == from_stdin.returncode == 0, from_file.stderr + from_stdin.stderr
    assert "Confidentiality: secret" in from_file.stdout and from_file.stdout == from_stdin.stdout
    missing = subprocess.run(run + [str(tmp_path / "absent.eml")], capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
