"""What we send upstream: MAIL parameters relayed or refused, no command injection, SASL encodings,
and credentials that never show up in a repr."""

from __future__ import annotations

import base64
import random
import string
from email._header_value_parser import get_angle_addr
from email.errors import HeaderParseError

import pytest

from caliproxy.errors import ClientProtocolError
from caliproxy.smtp.commands import (
    CommandRefused,
    Credentials,
    auth_login_steps,
    auth_plain_command,
    decode_base64,
    mail_command,
    mail_parameters,
    parse_plain,
    rcpt_command,
    simple_path,
)
from caliproxy.smtp.extensions import Extensions
from tests.smtp.test_extensions import POSTFIX

BARE = Extensions({"SIZE": "1000"})


def test_size_grows_by_our_header_and_body_and_smtputf8_are_relayed():
    params = mail_parameters(["BODY=8BITMIME", "SIZE=411", "SMTPUTF8"], upstream=POSTFIX, header_length=256)
    assert params == [b"BODY=8BITMIME", b"SIZE=667", b"SMTPUTF8"]


def test_parameters_the_upstream_lacks_are_dropped_or_refused():
    assert mail_parameters(["BODY=7BIT", "SIZE=10"], upstream=BARE, header_length=0) == [b"SIZE=10"]
    with pytest.raises(CommandRefused) as refused:
        mail_parameters(["BODY=8BITMIME"], upstream=BARE, header_length=0)
    assert refused.value.reply.code == 555
    with pytest.raises(CommandRefused):
        mail_parameters(["SMTPUTF8"], upstream=BARE, header_length=0)


@pytest.mark.parametrize("option", ["RET=FULL", "ENVID=x", "BODY=BINARYMIME", "SIZE=big", "AUTH=<>"])
def test_parameters_never_advertised_are_refused(option):
    with pytest.raises(CommandRefused) as refused:
        mail_parameters([option], upstream=POSTFIX, header_length=0)
    assert refused.value.reply.code in (501, 555)


def test_mail_and_rcpt_lines():
    assert mail_command("alice@example.test", [b"SIZE=5"]) == b"MAIL FROM:<alice@example.test> SIZE=5"
    assert rcpt_command("bob@example.test") == b"RCPT TO:<bob@example.test>"


def test_utf8_addresses_keep_the_clients_bytes():
    # aiosmtpd hands over arguments decoded with surrogateescape
    address = "jörg@exämple.test".encode().decode("utf-8", "surrogateescape")
    assert rcpt_command(address) == "RCPT TO:<jörg@exämple.test>".encode()


@pytest.mark.parametrize("address", ["a@b\r\nRCPT TO:<evil@x>", "a@b\nDATA", "a>b@c", "x\x00@y"])
def test_an_address_cannot_smuggle_a_command_upstream(address):
    with pytest.raises(CommandRefused):
        rcpt_command(address)
    with pytest.raises(CommandRefused):
        mail_command(address, [])


def test_plain_with_and_without_authzid():
    assert parse_plain(b"\x00alice\x00secret") == Credentials(b"alice", b"secret")
    assert parse_plain(b"admin\x00alice\x00secret").authzid == b"admin"
    for bad in (b"alice\x00secret", b"\x00\x00secret", b"a\x00b\x00c\x00d"):
        with pytest.raises(ClientProtocolError):
            parse_plain(bad)


def test_upstream_login_encodings():
    credentials = Credentials(b"alice", b"s3cret")
    command = auth_plain_command(credentials)
    assert command.startswith(b"AUTH PLAIN ")
    assert base64.b64decode(command.split()[2]) == b"\x00alice\x00s3cret"
    first, password = auth_login_steps(credentials)
    assert first == b"AUTH LOGIN " + base64.b64encode(b"alice")
    assert base64.b64decode(password) == b"s3cret"


def test_sasl_responses_decode_strictly():
    assert decode_base64("YWxpY2U=") == b"alice"
    assert decode_base64("=") == b""
    with pytest.raises(ClientProtocolError):
        decode_base64("not base64!")


def test_credentials_never_show_their_password():
    credentials = Credentials(b"alice", b"hunter2-password")
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in str(credentials)
    assert "hunter2" not in repr([credentials])


# -- the fast reading of MAIL/RCPT paths ------------------------------------------------------------

_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


def _stdlib(argument: str) -> tuple[str, str] | None:
    try:
        address, rest = get_angle_addr(argument)
    except HeaderParseError:
        return None
    return address.addr_spec, rest


@pytest.mark.parametrize(("argument", "expected"), [
    ("<alice@example.test>", ("alice@example.test", "")),
    ("<alice@example.test> SIZE=123 BODY=8BITMIME", ("alice@example.test", "SIZE=123 BODY=8BITMIME")),
    (" <a.b+c@x-y.example>\tSMTPUTF8", ("a.b+c@x-y.example", "SMTPUTF8")),
    ("<a@b>x", ("a@b", "x")),
])
def test_simple_paths_are_read_without_the_full_parser(argument, expected):
    assert simple_path(argument) == expected == _stdlib(argument)


@pytest.mark.parametrize("argument", [
    "<>", "<\"quoted local\"@example.test>", "<a@[192.0.2.1]>", "<a..b@example.test>", "<.a@b>",
    "<a@b.>", "< a@b>", "<a @b>", "<a@b> (comment) SIZE=1", "<a@b>(comment)", "<@relay:a@b>",
    "<ü@example.test>", "alice@example.test", "",
])
def test_anything_else_is_left_to_the_full_parser(argument):
    assert simple_path(argument) is None


def test_whenever_the_fast_reading_answers_it_agrees_with_the_standard_library():
    rng = random.Random(20261127)
    noise = _ATEXT + ".@<> \t\"()[]\\,;:\u00e9\r\x0c\u2003"
    answered = 0
    for _ in range(20000):
        local = "".join(rng.choice(_ATEXT + ".") for _ in range(rng.randint(1, 8)))
        domain = "".join(rng.choice(string.ascii_letters + string.digits + "-.")
                         for _ in range(rng.randint(1, 8)))
        rest = "".join(rng.choice([" ", "\t", "(", ")", "x", "=", "\r", "\x0c", "\u2003", "<", ">"])
                       for _ in range(rng.randint(0, 5)))
        for argument in (rng.choice(["", " ", "\t"]) + f"<{local}@{domain}>{rest}",
                         "".join(rng.choice(noise) for _ in range(rng.randint(1, 12)))):
            fast = simple_path(argument)
            if fast is not None:
                answered += 1
                assert fast == _stdlib(argument), argument
    assert answered > 5000
