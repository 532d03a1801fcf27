"""upstream.smtp's reply_timeout and data_timeout: parsed strictly, wired to the relay's timeouts."""

from __future__ import annotations

import pytest
from twisted.internet import reactor

from caliproxy.config import parse_config
from caliproxy.errors import ConfigError
from caliproxy.net.smtp_server import SubmissionListener
from caliproxy.net.smtp_upstream import UpstreamTimeouts
from caliproxy.service import ProxyService

CONFIG = """\
listeners:
  - name: submission
    protocol: smtp
    port: 0
    tls: none
    allow_plaintext_login: true
upstream:
  imap:
    host: 127.0.0.1
    port: 143
    tls: none
  smtp:
    host: 127.0.0.1
    port: 587
    tls: none
"""


def with_smtp(*lines: str) -> str:
    return CONFIG + "".join(f"    {line}\n" for line in lines)


def test_defaults_are_the_relays_own() -> None:
    smtp = parse_config(CONFIG).upstream_smtp
    assert smtp is not None
    defaults = UpstreamTimeouts()
    assert smtp.reply_timeout == defaults.command == defaults.greeting == defaults.data_start
    assert smtp.data_timeout == defaults.data_end


def test_values_are_read_as_seconds() -> None:
    smtp = parse_config(with_smtp("reply_timeout: 5", "data_timeout: 0.5")).upstream_smtp
    assert smtp is not None
    assert (smtp.reply_timeout, smtp.data_timeout) == (5.0, 0.5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("reply_timeout: 0", r"<config>:16: upstream.smtp.reply_timeout: must be positive"),
        ("data_timeout: -3", r"<config>:16: upstream.smtp.data_timeout: must be positive"),
        ("data_timeout: soon", r"<config>:16: upstream.smtp.data_timeout: must be a float, not 'soon'"),
        ("reply_timeout: true", r"upstream.smtp.reply_timeout: must be a float"),
        ("reply_timeout: [1]", r"upstream.smtp.reply_timeout: must be a float"),
        ("reply_timout: 5", r"<config>:16: upstream.smtp.reply_timout: unknown key \(known keys: .*reply_timeout"),
    ],
)
def test_bad_values_name_file_line_and_path(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_smtp(line))


def test_they_belong_to_the_smtp_upstream_only() -> None:
    text = CONFIG.replace("    tls: none\n  smtp:", "    tls: none\n    data_timeout: 5\n  smtp:")
    with pytest.raises(ConfigError, match=r"<config>:12: upstream.imap.data_timeout: unknown key"):
        parse_config(text)


def test_both_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_smtp("reply_timeout: 0", "data_timeout: 0"))
    assert len(str(info.value).splitlines()) == 2


def test_the_service_gives_them_to_every_smtp_listener() -> None:
    config = parse_config(with_smtp("reply_timeout: 7", "data_timeout: 11"))
    proxy = ProxyService(config, reactor)
    [listener] = [child for child in proxy if isinstance(child, SubmissionListener)]
    assert listener.context.timeouts == UpstreamTimeouts(greeting=7, command=7, data_start=7,
                                                         data_end=11)
