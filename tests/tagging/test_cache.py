"""The classification cache: what it keeps, how it is protected, and that it saves the upstream
header fetches it promises to save.

The store itself is tested directly (SQLite file, schema, modes, UIDVALIDITY, contents). The
savings are counted at the upstream: Dovecot logs, for every IMAP session that ends, how many
messages it returned header bytes of (``hdr_count`` in its logout line), so a SELECT through the
proxy that needs no classification leaves ``hdr_count=0`` however the proxy works inside.
"""

from __future__ import annotations

import re
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.header import parse_header
from caliproxy.store.cache import (
    SCHEMA_VERSION,
    CachedEntry,
    CacheError,
    ClassificationCache,
    MailboxKey,
)
from caliproxy.store.classifier import VerdictMemory

from .raw_client import RawImap

UPSTREAM = "imap://127.0.0.1:993"


def _message(n: int, sender: str = "carol@example.test", subject: str = "note") -> bytes:
    return (f"Received: from mx.example.org by imap.example.org with LMTP; Mon, 03 Jun 2024 10:00:0{n % 10} +0000\r\n"
            f"From: Carol <{sender}>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject} {n}\r\n"
            f"Date: Mon, 03 Jun 2024 10:00:00 +0000\r\nMessage-ID: <m{n}@cache.test>\r\n\r\n"
            f"body {n}\r\n").encode()


def _header(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def _entry(n: int) -> CachedEntry:
    return CachedEntry({"n": n}, 1, False, ())


# -- the store ------------------------------------------------------------------------------------


def test_the_file_and_its_journal_are_private(tmp_path):
    path = tmp_path / "state" / "cache.db"
    cache = ClassificationCache(path)
    cache.put_many(MailboxKey(UPSTREAM, "alice", "INBOX", 1), [(1, _entry(1))])
    for file in path.parent.iterdir():  # the database, and SQLite's -wal and -shm beside it
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    cache.close()
    path.chmod(0o644)  # left readable by someone: tightened again at the next start
    ClassificationCache(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_schema_is_versioned_and_kept_across_restarts(tmp_path):
    path = tmp_path / "cache.db"
    key = MailboxKey(UPSTREAM, "alice", "INBOX", 7)
    cache = ClassificationCache(path)
    cache.put_many(key, [(uid, _entry(uid)) for uid in (1, 2, 3)])
    cache.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"mailbox", "message"} <= tables
    reopened = ClassificationCache(path)
    assert sorted(reopened.get_many(key, [1, 2, 3, 4])) == [1, 2, 3]
    assert reopened.get_many(key, [2])[2] == _entry(2)


def test_a_file_of_a_newer_schema_or_not_a_cache_is_refused(tmp_path):
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CacheError, match="newer"):
        ClassificationCache(newer)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    with pytest.raises(CacheError, match="not a usable classification cache"):
        ClassificationCache(garbage)


def test_a_new_uidvalidity_drops_the_mailboxs_entries(tmp_path):
    cache = ClassificationCache(tmp_path / "cache.db")
    old = MailboxKey(UPSTREAM, "alice", "INBOX", 100)
    other = MailboxKey(UPSTREAM, "alice", "Archive", 100)
    cache.put_many(old, [(uid, _entry(uid)) for uid in range(1, 6)])
    cache.put_many(other, [(1, _entry(1))])
    assert cache.count() == 6
    new = MailboxKey(UPSTREAM, "alice", "INBOX", 101)
    assert cache.get_many(new, [1, 2, 3]) == {}
    assert cache.count() == 1  # the old INBOX entries are gone from the file, Archive's stay
    cache.put_many(new, [(1, _entry(99))])
    assert cache.get_many(new, [1]) == {1: _entry(99)}
    # the old UIDVALIDITY coming back is another change: nothing of either survives
    assert cache.get_many(old, [1]) == {}
    assert cache.get_many(other, [1]) == {1: _entry(1)}


def test_entries_are_separate_per_upstream_account_and_mailbox(tmp_path):
    cache = ClassificationCache(tmp_path / "cache.db")
    keys = [MailboxKey(UPSTREAM, "alice", "INBOX", 1), MailboxKey(UPSTREAM, "bob", "INBOX", 1),
            MailboxKey(UPSTREAM, "alice", "Sent", 1), MailboxKey("imap://other:993", "alice", "INBOX", 1)]
    for n, key in enumerate(keys):
        cache.put_many(key, [(1, _entry(n))])
    for n, key in enumerate(keys):
        assert cache.get_many(key, [1]) == {1: _entry(n)}


def test_no_message_content_and_no_clear_addresses_unless_the_policy_matches_on_them(tmp_path):
    subject, sender = "Quarterly figures Zq81x", "Zq81x.sender@example.test"
    headers = [(1, _header(_message(1, sender, subject)))]
    plain = tmp_path / "plain.db"
    VerdictMemory(policy_from_mapping({}), ClassificationCache(plain), UPSTREAM).classify(
        MailboxKey(UPSTREAM, "alice@example.test", "INBOX", 1), headers)
    data = b"".join(path.read_bytes() for path in tmp_path.glob("plain.db*"))
    for secret in (subject.encode(), b"zq81x", b"Zq81x", b"alice@example.test", b"INBOX", b"body 1"):
        assert secret not in data, secret
    # A policy matching on correspondents needs the addresses: then they are kept.
    needs = tmp_path / "needs.db"
    VerdictMemory(policy_from_mapping({"known_correspondents": ["*@example.test"]}), ClassificationCache(needs),
                  UPSTREAM).classify(MailboxKey(UPSTREAM, "alice", "INBOX", 1), headers)
    data = b"".join(path.read_bytes() for path in tmp_path.glob("needs.db*"))
    assert sender.lower().encode() in data and subject.encode() not in data


def test_a_new_policy_relevels_from_the_cache_without_the_headers(tmp_path):
    path = tmp_path / "cache.db"
    key = MailboxKey(UPSTREAM, "alice", "INBOX", 1)
    headers = [(uid, _header(_message(uid))) for uid in range(1, 21)]
    first = VerdictMemory(policy_from_mapping({"default_level": "internal"}), ClassificationCache(path), UPSTREAM)
    assert {t.level for t in first.classify(key, headers).values()} == {"internal"}
    # Another process, another policy, the same file: every verdict comes from the stored features.
    second = VerdictMemory(policy_from_mapping({"default_level": "confidential"}), ClassificationCache(path),
                           UPSTREAM)
    known = second.known(key, [uid for uid, _ in headers])
    assert sorted(known) == list(range(1, 21))
    assert {t.level for t in known.values()} == {"confidential"}
    assert all(parse_header(t.block).level == "confidential" for t in known.values())


def _no_judging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any decoding of stored features fail the test: verdicts must come as stored."""
    from caliproxy.privacy.features import MessageFeatures

    def refuse(data):  # type: ignore[no-untyped-def]
        raise AssertionError("judged again")

    monkeypatch.setattr(MessageFeatures, "from_dict", staticmethod(refuse))


def test_a_restart_under_the_same_policy_reads_the_stored_verdicts(tmp_path, monkeypatch):
    path = tmp_path / "cache.db"
    key = MailboxKey(UPSTREAM, "alice", "INBOX", 1)
    headers = [(uid, _header(_message(uid))) for uid in range(1, 11)]
    policy = {"default_level": "confidential"}
    made = VerdictMemory(policy_from_mapping(policy), ClassificationCache(path), UPSTREAM).classify(key, headers)
    with monkeypatch.context() as patch:
        _no_judging(patch)
        again = VerdictMemory(policy_from_mapping(policy), ClassificationCache(path), UPSTREAM).known(key, list(made))
    assert again == made
    # Another policy judges afresh (and stores what it made); back to the first, judged afresh again.
    other = VerdictMemory(policy_from_mapping({"default_level": "internal"}), ClassificationCache(path), UPSTREAM)
    assert {t.level for t in other.known(key, list(made)).values()} == {"internal"}
    with monkeypatch.context() as patch:
        _no_judging(patch)
        stored = VerdictMemory(policy_from_mapping({"default_level": "internal"}), ClassificationCache(path),
                               UPSTREAM).known(key, list(made))
    assert {t.level for t in stored.values()} == {"internal"}
    back = VerdictMemory(policy_from_mapping(policy), ClassificationCache(path), UPSTREAM).known(key, list(made))
    assert back == made


def test_a_stored_verdict_is_used_only_as_it_was_made(tmp_path, monkeypatch):
    from caliproxy.store import classifier

    path = tmp_path / "cache.db"
    key = MailboxKey(UPSTREAM, "alice", "INBOX", 1)
    policy = policy_from_mapping({"default_level": "secret"})
    made = VerdictMemory(policy, ClassificationCache(path), UPSTREAM).classify(key, [(1, _header(_message(1))),
                                                                                   (2, _header(_message(2)))])
    with sqlite3.connect(path) as db:
        # a level the policy does not have, and a header of the wrong length: judged again
        db.execute("UPDATE message SET verdict_level = 'nonsense' WHERE uid = 1")
        db.execute("UPDATE message SET verdict_header = x'00' WHERE uid = 2")
    assert VerdictMemory(policy, ClassificationCache(path), UPSTREAM).known(key, [1, 2]) == made
    # Other code (its digest unknown): no stored verdict is trusted at all.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE message SET verdict_level = 'public'")
    with monkeypatch.context() as patch:
        patch.setattr(classifier, "_ENGINE", None)
        memory = VerdictMemory(policy, ClassificationCache(path), UPSTREAM)
        assert memory.fingerprint is None
        assert memory.known(key, [1, 2]) == made
    # (the same fingerprint takes what the file says: the file is the proxy's own, mode 0600)
    assert {t.level for t in VerdictMemory(policy, ClassificationCache(path), UPSTREAM).known(key, [1, 2]).values()} \
        == {"public"}
    # A changed engine digest is another fingerprint.
    monkeypatch.setattr(classifier, "_ENGINE", "another")
    assert VerdictMemory(policy, ClassificationCache(path), UPSTREAM).known(key, [1, 2]) == made


def test_the_policys_repr_holds_everything_a_verdict_depends_on():
    """The fingerprint digests ``repr(policy)``: a field left out of a repr may only be one derived
    from the others (``init=False``), in the policy and everything it is made of."""
    import dataclasses

    from caliproxy.privacy import addresses, levels, policy

    classes = [value for module in (policy, addresses, levels) for value in vars(module).values()
               if isinstance(value, type) and dataclasses.is_dataclass(value)]
    assert policy.Policy in classes
    for cls in classes:
        for spec in dataclasses.fields(cls):
            assert spec.repr or not spec.init, f"{cls.__name__}.{spec.name}"


# -- through the proxy ------------------------------------------------------------------------------

MESSAGES = 60


def _header_fetches(dovecot, since: int, sessions: int = 1, timeout: float = 10) -> tuple[list[int], int]:
    """(messages whose headers Dovecot returned in each IMAP session, in order; log size) once
    ``sessions`` sessions have ended after offset ``since`` of its log."""
    deadline = time.monotonic() + timeout
    while True:
        data = Path(dovecot.log_path).read_bytes()
        ended = re.findall(rb"imap\(alice\).*Disconnected: .*hdr_count=(\d+)", data[since:])
        if len(ended) >= sessions:
            return sorted(int(n) for n in ended), len(data)
        assert time.monotonic() < deadline, data[since:].decode(errors="replace")
        time.sleep(0.05)


def _select_through(proxy, ca_pem) -> None:
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        client.command("SELECT INBOX")


def _levels_through(proxy, ca_pem) -> set[str]:
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        client.command("EXAMINE INBOX")
        data = client.command("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)])")
    return {m.decode() for m in re.findall(rb"level=([\w.-]+);", data)}


def test_restart_policy_change_and_uidvalidity_change_through_the_proxy(dovecot, proxy_factory, server_cert_files,
                                                                        tmp_path):
    ca_pem = server_cert_files.ca_pem
    dovecot.bulk_load("alice", [_message(n) for n in range(MESSAGES)])
    cache = tmp_path / "cache" / "classification.db"

    def start(level: str):
        return proxy_factory(dovecot, extra_config={"cache": {"path": str(cache)},
                                                    "policy": {"default_level": level}})

    _, offset = _header_fetches(dovecot, 0, sessions=0)
    proxy = start("internal")
    _select_through(proxy, ca_pem)
    fetched, offset = _header_fetches(dovecot, offset, sessions=2)
    # A cold cache: every header read once, on the proxy's own connection; the client's read none.
    assert fetched == [0, MESSAGES]
    assert _levels_through(proxy, ca_pem) == {"internal"}
    _, offset = _header_fetches(dovecot, offset)
    proxy.stop()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600

    # Restarted on the same file: SELECT reads no header at all.
    proxy = start("internal")
    _select_through(proxy, ca_pem)
    fetched, offset = _header_fetches(dovecot, offset)
    assert fetched == [0]  # (and no connection of the proxy's own was needed)
    proxy.stop()

    # A new policy: new levels from the stored features, still no header read to classify.
    proxy = start("confidential")
    _select_through(proxy, ca_pem)
    fetched, offset = _header_fetches(dovecot, offset)
    assert fetched == [0]
    assert _levels_through(proxy, ca_pem) == {"confidential"}
    _, offset = _header_fetches(dovecot, offset)

    # New mail: only the newcomer is read.
    dovecot.bulk_load("alice", [_message(MESSAGES)])
    _select_through(proxy, ca_pem)
    fetched, offset = _header_fetches(dovecot, offset, sessions=2)
    assert fetched == [0, 1]

    # UIDVALIDITY changes (the mailbox was rebuilt): every UID is a stranger again.
    dovecot.doveadm("mailbox", "update", "-u", "alice", "--uid-validity", "4242", "INBOX")
    _select_through(proxy, ca_pem)
    fetched, offset = _header_fetches(dovecot, offset, sessions=2)
    assert fetched == [0, MESSAGES + 1]
    proxy.stop()
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM message").fetchone()[0] == MESSAGES + 1
        assert db.execute("SELECT uidvalidity FROM mailbox").fetchall() == [(4242,)]


def test_a_version_1_file_is_migrated_and_scrubbed_of_account_and_mailbox_names(tmp_path):
    from caliproxy.store.cache import _MIGRATIONS

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript("BEGIN;" + _MIGRATIONS[1] + "PRAGMA user_version = 1; COMMIT;")
        db.execute("INSERT INTO mailbox VALUES (1, ?, 'a', 'b', 5)", (UPSTREAM,))
        db.execute("INSERT INTO message VALUES (1, 1, 1, 0, ?, '[]')",
                   ('{"account": "Kx93.account@example.test", "mailbox": "Kx93 folder", "size": null}',))
    ClassificationCache(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert db.execute("SELECT features FROM message").fetchone()[0] == \
            '{"account":"","mailbox":"","size":null}'
        # made with the only name there was then
        assert db.execute("SELECT value FROM meta").fetchall() == [("X-Caliproxy-Privacy",)]
    assert not any(b"Kx93" in file.read_bytes() for file in tmp_path.iterdir())


def _one_entry(cache: ClassificationCache) -> MailboxKey:
    key = MailboxKey(UPSTREAM, "alice", "INBOX", 7)
    cache.put_many(key, [(1, CachedEntry({"size": None}, 1, False, (40,)))])
    return key


def test_entries_made_under_another_header_name_are_dropped(tmp_path):
    path = tmp_path / "cache.db"
    cache = ClassificationCache(path)
    key = _one_entry(cache)
    cache.close()
    same = ClassificationCache(path, "x-caliproxy-privacy")  # header names ignore case
    assert same.get_many(key, [1])[1].spoofs == (40,)
    same.close()
    # The spoof offsets were found for the old name: patching them under a new one would be wrong.
    renamed = ClassificationCache(path, "X-Home-Privacy")
    assert renamed.count() == 0
    _one_entry(renamed)
    renamed.close()
    assert ClassificationCache(path, "X-Home-Privacy").count() == 1
    assert ClassificationCache(path).count() == 0
