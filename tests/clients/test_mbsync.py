"""mbsync (isync) mirrors a real mailbox through caliproxy exactly as it does from Dovecot itself.

Dovecot on loopback holds a few hundred messages of varied sizes and flags in INBOX plus a second,
nested folder. mbsync pulls everything into a local Maildir once directly from Dovecot and once
through the real caliproxy process, over implicit TLS and over STARTTLS. The message files must be
byte-identical, folder by folder, and carry the same Maildir flags.

mbsync 1.4 matches only DNS names and the CN of a certificate, never IP addresses, so every
connection goes to ``localhost``.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from caliproxy.demo.seed import bulk_messages, sample_messages
from tests.fixtures.upstreams import have_binary

pytestmark = [
    pytest.mark.client,
    pytest.mark.skipif(not have_binary("mbsync"), reason="mbsync is not installed (apt-get install isync)"),
]

USER, PASSWORD = "alice", "alicepw"
SECOND_FOLDER = "Projects/Reports"

# (first index, last index + 1, approximate size in bytes, Maildir flags) of the INBOX bulk mail:
# small notes, ordinary mail, long mail with a few large ones; seen and unseen, some flagged
_INBOX_SEGMENTS = (
    (0, 120, 700, "S"),
    (120, 230, 6_000, ""),
    (230, 285, 40_000, "SF"),
    (285, 300, 300_000, "SR"),
)
_SECOND_FOLDER_SEGMENTS = (
    (300, 340, 2_500, "S"),
    (340, 360, 120_000, ""),
)

_SYNC_TIMEOUT = 120


def _segment_messages(segments) -> list[tuple[list[bytes], str]]:
    """The bulk messages of each segment; indices never repeat, so every message is distinct."""
    return [(bulk_messages(end, size)[start:end], flags) for start, end, size, flags in segments]


@pytest.fixture
def mailbox(dovecot):
    """Dovecot with ~300 bulk messages plus the samples in INBOX and ~60 in a nested folder."""
    expected = {"INBOX": 0, SECOND_FOLDER: 0}
    for messages, flags in _segment_messages(_INBOX_SEGMENTS):
        expected["INBOX"] = dovecot.bulk_load(USER, messages, flags=flags)
    expected["INBOX"] = dovecot.bulk_load(USER, sample_messages(), flags="S")
    for messages, flags in _segment_messages(_SECOND_FOLDER_SEGMENTS):
        expected[SECOND_FOLDER] = dovecot.bulk_load(USER, messages, SECOND_FOLDER, flags=flags)
    assert expected["INBOX"] == 300 + len(sample_messages())
    assert expected[SECOND_FOLDER] == 60
    return dovecot, expected


def _write_config(directory: Path, port: int, ssl_type: str, ca_pem: Path) -> Path:
    """An mbsyncrc pulling every folder of the account into ``directory/mail``."""
    mail = directory / "mail"
    mail.mkdir(parents=True)
    config = directory / "mbsyncrc"
    config.write_text(f"""\
IMAPAccount alice
Host localhost
Port {port}
User {USER}
Pass {PASSWORD}
SSLType {ssl_type}
CertificateFile {ca_pem}
SystemCertificates no

IMAPStore remote
Account alice

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel alice
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
""")
    return config


def _mbsync(directory: Path, port: int, ssl_type: str, ca_pem: Path) -> dict[str, Counter]:
    """Run one full pull; return, per folder, the multiset of (file bytes, Maildir flags)."""
    config = _write_config(directory, port, ssl_type, ca_pem)
    result = subprocess.run(
        ["mbsync", "-c", str(config), "-a"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=_SYNC_TIMEOUT, check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"mbsync failed ({result.returncode}):\n{output}"
    return _read_maildirs(directory / "mail")


def _without_tuid(raw: bytes) -> bytes:
    """The message without the ``X-TUID:`` line mbsync writes into every new near-side copy.

    mbsync tags each message it propagates with a random transaction id (to find it again after
    an interrupted run), so two syncs of the same message differ in exactly that header line.
    """
    head, sep, body = raw.partition(b"\n\n")
    lines = head.split(b"\n")
    kept = [line for line in lines if not line.lower().startswith(b"x-tuid: ")]
    assert len(lines) - len(kept) <= 1, "more than one X-TUID line"
    return b"\n".join(kept) + sep + body


def _read_maildirs(root: Path) -> dict[str, Counter]:
    folders: dict[str, Counter] = {}
    for cur in sorted(root.rglob("cur")):
        folder = cur.parent.relative_to(root).as_posix()
        files: Counter = Counter()
        for sub in ("cur", "new"):
            for path in (cur.parent / sub).iterdir():
                # mbsync names files <time>.<pid>_<n>.<host>,U=<uid>:2,<flags>; only the
                # flags are the server's, the rest is local bookkeeping
                flags = path.name.rsplit(":2,", 1)[1] if ":2," in path.name else ""
                files[(_without_tuid(path.read_bytes()), flags)] += 1
        folders[folder] = files
    return folders


def _describe(direct: dict[str, Counter], proxied: dict[str, Counter]) -> str:
    lines = []
    for folder in sorted(direct.keys() | proxied.keys()):
        want, got = direct.get(folder, Counter()), proxied.get(folder, Counter())
        if want != got:
            lines.append(f"{folder}: direct {sum(want.values())} files, proxied {sum(got.values())}, "
                         f"{sum((want - got).values())} missing or different, "
                         f"{sum((got - want).values())} unexpected")
    return "; ".join(lines)


@pytest.mark.parametrize(("listener", "ssl_type"), [("imaps", "IMAPS"), ("imap", "STARTTLS")])
def test_mbsync_pull_through_proxy_is_byte_identical_to_direct(
    mailbox, proxy_factory, server_cert_files, tmp_path, listener, ssl_type
):
    """Every folder mbsync writes through the proxy holds the same files as a direct sync."""
    dovecot, expected = mailbox
    ca_pem = server_cert_files.ca_pem

    direct = _mbsync(tmp_path / "direct", dovecot.imaps_port, "IMAPS", ca_pem)
    assert sum(direct["INBOX"].values()) == expected["INBOX"]
    assert sum(direct[SECOND_FOLDER].values()) == expected[SECOND_FOLDER]

    proxy = proxy_factory(dovecot, upstream_tls="implicit", tagging=False)  # a transparent relay
    proxied = _mbsync(tmp_path / "proxied", proxy.ports[listener], ssl_type, ca_pem)

    assert proxied.keys() == direct.keys()
    assert proxied == direct, _describe(direct, proxied)
