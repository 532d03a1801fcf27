"""mbsync (isync) on the untrusted listener mirrors exactly the visible part of the account.

``alice`` has visible and secret mail in INBOX, in Archive, and only secret mail in Private;
``bob`` has the visible messages alone, the same bytes. mbsync pulling ``alice`` through the proxy's
``cafe-plain`` listener (clearance internal, no header added) must write the same Maildir files,
folder by folder, as mbsync pulling ``bob`` straight from Dovecot; through ``cafe`` (our header
added) the same messages, and not one byte of the secret ones. A second run after new mail, secret
and visible, and an expunge picks up exactly the visible changes.

mbsync checks only DNS names against certificates, so it connects to ``localhost``.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.upstreams import have_binary
from tests.hiding.conftest import USERS, Hiding, Secret, message, secret_message

pytestmark = [
    pytest.mark.client,
    pytest.mark.skipif(not have_binary("mbsync"), reason="mbsync is not installed (apt-get install isync)"),
]


def _sync(directory: Path, user: str, port: int, ca_pem: Path) -> dict[str, Counter]:
    """One full pull of every folder; per folder, the multiset of (message bytes, Maildir flags)."""
    mail = directory / "mail"
    mail.mkdir(parents=True, exist_ok=True)
    config = directory / "mbsyncrc"
    config.write_text(f"""\
IMAPAccount acct
Host localhost
Port {port}
User {user}
Pass {USERS[user]}
SSLType IMAPS
CertificateFile {ca_pem}
SystemCertificates no

IMAPStore remote
Account acct

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel acct
Far :remote:
Near :local:
Patterns *
Create Near
Expunge Near
Sync Pull
SyncState *
""")
    result = subprocess.run(["mbsync", "-c", str(config), "-a"], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=120, check=False)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"mbsync failed ({result.returncode}):\n{output}"
    folders: dict[str, Counter] = {}
    for cur in sorted(mail.rglob("cur")):
        files: Counter = Counter()
        for sub in ("cur", "new"):
            for path in (cur.parent / sub).iterdir():
                flags = path.name.rsplit(":2,", 1)[1] if ":2," in path.name else ""
                files[(_without_tuid(path.read_bytes()), flags)] += 1
        folders[cur.parent.relative_to(mail).as_posix()] = files
    return folders


def _without_tuid(raw: bytes) -> bytes:
    """mbsync writes an ``X-TUID:`` line into the header of every message it stores."""
    head, sep, body = raw.partition(b"\n\n")
    return b"\n".join(line for line in head.split(b"\n") if not line.lower().startswith(b"x-tuid: ")) + sep + body


def _all_bytes(folders: dict[str, Counter]) -> bytes:
    return b"".join(raw for files in folders.values() for raw, _flags in files)


def _assert_no_secret(folders: dict[str, Counter], secrets: list[Secret]) -> None:
    data = _all_bytes(folders)
    for secret in secrets:
        for marker in secret.markers:
            assert marker not in data, f"{marker!r} was synced through the untrusted listener"


def test_mbsync_on_the_untrusted_listener_syncs_exactly_the_visible_mail(hiding: Hiding, tmp_path: Path) -> None:
    secrets: list[Secret] = []

    def secret() -> bytes:
        made = secret_message(size=2_000 + 500 * len(secrets))
        secrets.append(made)
        return made.raw

    layout = {"INBOX": "vsvvsvs", "Archive": "svvs", "Private": "ss"}
    count = 0
    for folder, kinds in layout.items():
        for kind in kinds:
            count += 1
            if kind == "s":
                hiding.save("alice", secret(), folder)
            else:
                raw = message(f"visible {count}", f"body {count}", size=300 * count)
                hiding.save("alice", raw, folder)
                hiding.save("bob", raw, folder)
    hiding.dovecot.doveadm("mailbox", "create", "-u", "bob", "Private")
    ca = hiding.proxy.ca_pem

    direct = _sync(tmp_path / "direct", "bob", hiding.dovecot.imaps_port, ca)
    assert sum(direct["INBOX"].values()) == 4 and sum(direct["Archive"].values()) == 2
    plain = _sync(tmp_path / "plain", "alice", hiding.proxy.ports["cafe-plain"], ca)
    assert plain == direct
    tagged = _sync(tmp_path / "tagged", "alice", hiding.proxy.ports["cafe"], ca)
    assert {f: sum(c.values()) for f, c in tagged.items()} == {f: sum(c.values()) for f, c in direct.items()}
    assert all(raw.startswith(b"X-Caliproxy-Privacy: v=1; level=internal;") for raw, _ in
               (key for files in tagged.values() for key in files))
    _assert_no_secret(plain, secrets)
    _assert_no_secret(tagged, secrets)

    # new mail of both kinds, a visible message expunged: the next run follows the visible part
    news = message("visible news", "fresh", size=777)
    for user in ("alice", "bob"):
        hiding.save(user, news)
    hiding.save("alice", secret())
    for user in ("alice", "bob"):
        trusted = hiding.trusted(user)
        assert trusted.command("SELECT Archive").ok
        first = trusted.command("UID SEARCH SUBJECT visible").search()[0]
        assert trusted.command(f"UID STORE {first} +FLAGS.SILENT (\\Deleted)").ok
        assert trusted.command(f"UID EXPUNGE {first}").ok
        trusted.command("LOGOUT")
    direct = _sync(tmp_path / "direct", "bob", hiding.dovecot.imaps_port, ca)
    plain = _sync(tmp_path / "plain", "alice", hiding.proxy.ports["cafe-plain"], ca)
    assert sum(direct["INBOX"].values()) == 5 and sum(direct["Archive"].values()) == 1
    assert plain == direct
    _assert_no_secret(plain, secrets)
