"""The classification cache: extracted features per upstream message, in SQLite.

Keyed by (upstream, account, mailbox, UIDVALIDITY, UID). What is stored, per message:

* the engine's ``MessageFeatures`` as JSON (transport hops, authentication results, spam
  verdicts, content type, sensitivity, list id, participants) and the features version, without
  the account and mailbox names (the key has them, as digests);
* the offsets of any forged privacy header in the upstream header (to neutralise it), which
  depend on our header's name: the name the entries were made with is kept (table ``meta``) and
  opening the cache with another name drops every entry;
* nothing of the message content: no subject, no body, no other header values — except the
  values of header fields the policy's own ``header`` rules name, which it needs to re-level;
* the verdict last made from the features (level and rendered privacy header) with the
  fingerprint of what made it (policy, header name, the engine's code; see
  ``store.classifier``): a restart under the same fingerprint takes it as it is instead of
  decoding and judging every message again; any other fingerprint judges afresh.

Participants' addresses are stored as SHA-256 digests unless the policy matches on addresses
(sender/recipient rules, known correspondents); such a policy re-reads headers for entries
stored without them. Account and mailbox names are stored as digests only. The database file is
created with mode 0600. The schema is versioned (SQLite's ``user_version``); ``_MIGRATIONS``
upgrades older files in order, and a file written by a newer schema, or not a cache at all, is
refused with :class:`CacheError` rather than read with the wrong meaning.

Writes are batched in one transaction per batch of classifications; reads for a whole mailbox
are one query. A UIDVALIDITY change drops that mailbox's entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from caliproxy.errors import CaliproxyError

SCHEMA_VERSION = 4
#: The header name of caches that do not record one (schema 2 and older): the only one there was.
_FORMER_HEADER_NAME = "X-Caliproxy-Privacy"

_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE mailbox (
            id INTEGER PRIMARY KEY,
            upstream TEXT NOT NULL,
            account TEXT NOT NULL,      -- sha256 of the account name
            name TEXT NOT NULL,         -- sha256 of the mailbox name
            uidvalidity INTEGER NOT NULL,
            UNIQUE (upstream, account, name)
        );
        CREATE TABLE message (
            mailbox INTEGER NOT NULL REFERENCES mailbox(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            features_version INTEGER NOT NULL,
            clear_addresses INTEGER NOT NULL,
            features TEXT NOT NULL,     -- JSON of MessageFeatures.to_dict()
            spoofs TEXT NOT NULL,       -- JSON list of offsets
            PRIMARY KEY (mailbox, uid)
        ) WITHOUT ROWID;
    """,
    # Version 1 files also kept the account and mailbox names in clear inside the features.
    2: """
        UPDATE message SET features = json_set(features, '$.account', '', '$.mailbox', '');
    """,
    3: """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    """,
    4: """
        ALTER TABLE message ADD COLUMN verdict_of TEXT;       -- fingerprint of what judged
        ALTER TABLE message ADD COLUMN verdict_level TEXT;
        ALTER TABLE message ADD COLUMN verdict_header BLOB;   -- the rendered privacy header
    """,
}


class CacheError(CaliproxyError):
    """The cache file cannot be used: not a classification cache, or from a newer schema."""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class MailboxKey:
    upstream: str
    account: str
    mailbox: str
    uidvalidity: int


@dataclass(frozen=True, slots=True)
class CachedEntry:
    features: dict  # type: ignore[type-arg]  # MessageFeatures.to_dict()
    features_version: int
    clear_addresses: bool
    spoofs: tuple[int, ...]
    verdict: StoredVerdict | None = None  # written with the entry (not read back by get_many)


@dataclass(frozen=True, slots=True)
class StoredVerdict:
    """A verdict made from an entry's features: by what (``made_by``, a fingerprint), its level
    and the rendered privacy header."""

    made_by: str
    level: str
    header: bytes


class ClassificationCache:
    """SQLite-backed cache; ``path=":memory:"`` keeps it in memory (tests, or no state dir).

    ``header_name`` is our header's configured name (see the module docstring)."""

    def __init__(self, path: str | Path, header_name: str = _FORMER_HEADER_NAME) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Create the file 0600 before SQLite opens it: it describes people's mail.
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")  # dropped entries leave no trace
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
            self._check_header_name(header_name)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CacheError(f"{self.path}: not a usable classification cache: {exc}") from None
        except CacheError:
            self._db.close()
            raise
        self._mailbox_ids: dict[MailboxKey, int] = {}
        self.hits = 0
        self.misses = 0

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CacheError(f"{self.path}: written by a newer caliproxy (cache schema {version}, this one "
                             f"reads up to {SCHEMA_VERSION}); point cache.path elsewhere or remove the file")
        for target in sorted(v for v in _MIGRATIONS if v > version):
            self._db.executescript("BEGIN;" + _MIGRATIONS[target] + f"PRAGMA user_version = {target}; COMMIT;")
        if 0 < version < SCHEMA_VERSION:
            # An upgraded file may have rewritten what it must no longer hold: leave no old copy of
            # it in free pages or in the write-ahead log.
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _check_header_name(self, name: str) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'header_name'").fetchone()
        made_with = row[0] if row is not None else _FORMER_HEADER_NAME
        if made_with.lower() != name.lower():
            # Offsets of forged headers of the old name: useless, and wrong to patch.
            self._db.execute("DELETE FROM mailbox")
        if row is None or made_with != name:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('header_name', ?)", (name,))

    def close(self) -> None:
        self._db.close()

    def _mailbox_id(self, key: MailboxKey) -> int:
        cached = self._mailbox_ids.get(key)
        if cached is not None:
            return cached
        account, name = digest(key.account), digest(key.mailbox)
        row = self._db.execute(
            "SELECT id, uidvalidity FROM mailbox WHERE upstream=? AND account=? AND name=?",
            (key.upstream, account, name),
        ).fetchone()
        if row is not None and row[1] != key.uidvalidity:
            # UIDVALIDITY changed: every UID we knew names another message now.
            self._db.execute("DELETE FROM mailbox WHERE id=?", (row[0],))
            row = None
        if row is None:
            cursor = self._db.execute(
                "INSERT INTO mailbox (upstream, account, name, uidvalidity) VALUES (?, ?, ?, ?)",
                (key.upstream, account, name, key.uidvalidity),
            )
            mailbox_id = int(cursor.lastrowid)  # type: ignore[arg-type]
        else:
            mailbox_id = int(row[0])
        if row is None:
            self._mailbox_ids.clear()  # an older UIDVALIDITY of this mailbox may be remembered
        self._mailbox_ids[key] = mailbox_id
        return mailbox_id

    def get_many(self, key: MailboxKey, uids: Sequence[int] | None = None) -> dict[int, CachedEntry]:
        """Cached entries of ``key``'s mailbox (all of them, or those of ``uids``)."""
        mailbox = self._mailbox_id(key)
        rows = self._db.execute(
            "SELECT uid, features_version, clear_addresses, features, spoofs FROM message WHERE mailbox=?",
            (mailbox,),
        ).fetchall()
        wanted = None if uids is None else set(uids)
        result = {}
        for uid, version, clear, features, spoofs in rows:
            if wanted is None or uid in wanted:
                result[uid] = CachedEntry(json.loads(features), version, bool(clear), tuple(json.loads(spoofs)))
        if wanted is not None:
            self.hits += len(result)
            self.misses += len(wanted) - len(result)
        return result

    def put_many(self, key: MailboxKey, entries: Iterable[tuple[int, CachedEntry]]) -> None:
        mailbox = self._mailbox_id(key)
        rows = [
            (mailbox, uid, e.features_version, int(e.clear_addresses), json.dumps(e.features),
             json.dumps(list(e.spoofs)), *_verdict_columns(e.verdict))
            for uid, e in entries
        ]
        if not rows:
            return
        self._db.execute("BEGIN")
        # (replacing an entry replaces its verdict: one made from other features never stays)
        self._db.executemany(
            "INSERT OR REPLACE INTO message (mailbox, uid, features_version, clear_addresses, features, spoofs, "
            "verdict_of, verdict_level, verdict_header) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def get_verdicts(self, key: MailboxKey, uids: Sequence[int], made_by: str, features_version: int
                     ) -> dict[int, tuple[str, bytes, tuple[int, ...]]]:
        """(level, privacy header, spoofs) of the entries of ``uids`` whose stored verdict was made
        by ``made_by`` from features of ``features_version``; the others are not returned."""
        mailbox = self._mailbox_id(key)
        rows = self._db.execute(
            "SELECT uid, verdict_level, verdict_header, spoofs FROM message "
            "WHERE mailbox=? AND verdict_of=? AND features_version=?",
            (mailbox, made_by, features_version),
        ).fetchall()
        wanted = set(uids)
        result = {}
        for uid, level, header, spoofs in rows:
            if uid in wanted and isinstance(level, str) and isinstance(header, bytes):
                result[uid] = (level, header, () if spoofs == "[]" else tuple(json.loads(spoofs)))
        self.hits += len(result)
        return result

    def put_verdicts(self, key: MailboxKey, verdicts: Iterable[tuple[int, StoredVerdict]]) -> None:
        """Store verdicts made afresh from the entries of these UIDs (a new policy, say)."""
        mailbox = self._mailbox_id(key)
        rows = [(*_verdict_columns(v), mailbox, uid) for uid, v in verdicts]
        if not rows:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "UPDATE message SET verdict_of=?, verdict_level=?, verdict_header=? WHERE mailbox=? AND uid=?", rows)
        self._db.execute("COMMIT")

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM message").fetchone()[0])


def _verdict_columns(verdict: StoredVerdict | None) -> tuple[str | None, str | None, bytes | None]:
    if verdict is None:
        return None, None, None
    return verdict.made_by, verdict.level, verdict.header
