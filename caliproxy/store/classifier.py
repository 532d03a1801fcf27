"""The IMAP session's classifier: privacy engine + classification cache + a clearance.

Glue outside the rings: it imports the pure privacy engine and the SQLite cache, and implements
``caliproxy.imap.classify.Classifier`` for one account on one connection. Verdicts are also kept
in memory per (account, mailbox, UIDVALIDITY) for the life of the process, so re-selecting a big
mailbox costs a dictionary lookup, not a JSON decode per message; a new policy starts a new memory.

Each verdict is also stored with its entry under :func:`verdict_fingerprint` (the policy, our
header's name and a digest of the privacy engine's code), so a restart under the same policy and
code reads verdicts instead of judging every message again. Anything that could change a verdict
changes the fingerprint, and a stored verdict of another fingerprint is never used; when the code
cannot be read to digest it, nothing stored is used (every message is judged, as before).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import filterfalse
from pathlib import Path

from caliproxy.imap.classify import Tagged
from caliproxy.imap.virtual import FieldNames, spoof_offsets
from caliproxy.privacy.features import (
    FEATURES_VERSION,
    MessageContext,
    MessageFeatures,
    extract_features,
)
from caliproxy.privacy.header import (
    DEFAULT_HEADER,
    HEADER_LENGTH,
    HeaderName,
    render_header,
    render_unclassified,
)
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.verdict import evaluate
from caliproxy.store.cache import (
    CachedEntry,
    ClassificationCache,
    MailboxKey,
    StoredVerdict,
    digest,
)

_ADDRESS_FIELDS = ("from_addresses", "sender_addresses", "reply_to", "to", "cc", "bcc")


def field_names(header: HeaderName) -> FieldNames:
    """The IMAP session's view of a (checked) header name."""
    return FieldNames(header.name.encode("ascii"), header.spoofed.encode("ascii"))


def _engine_digest() -> str | None:
    """A digest of the code a verdict comes from (the privacy package and this module), or None
    when it cannot be read (then no stored verdict is trusted)."""
    here = Path(__file__).resolve()
    try:
        sources = sorted((here.parent.parent / "privacy").glob("*.py")) + [here]
        hashed = hashlib.sha256()
        for source in sources:
            hashed.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    except OSError:
        return None
    return hashed.hexdigest() if len(sources) > 1 else None


_ENGINE = _engine_digest()


def verdict_fingerprint(policy: Policy, header: HeaderName) -> str | None:
    """What a verdict made from stored features depends on besides them: the policy (its repr
    holds every field that judges; derived fields are made from those), our header's name (it
    is rendered into the verdict), the features' and the engine's versions. None: unknown code."""
    if _ENGINE is None:
        return None
    text = "\n".join((repr(policy), header.name, str(FEATURES_VERSION), _ENGINE))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def policy_needs_addresses(policy: Policy) -> bool:
    """True when rules or known correspondents match on participants' addresses."""
    if policy.known_correspondents:
        return True
    return any(rule.match.sender or rule.match.recipient for rule in policy.rules)


def redact(features: MessageFeatures) -> MessageFeatures:
    """Participants replaced by digests (domains are kept; they carry the transport reasoning)."""
    changes = {
        name: tuple(f"sha256:{digest(a)[:32]}@{a.rpartition('@')[2]}" for a in getattr(features, name))
        for name in _ADDRESS_FIELDS
    }
    return replace(features, **changes)


class VerdictMemory:
    """Process-wide memory of verdicts under one policy, shared by every connection."""

    def __init__(self, policy: Policy, cache: ClassificationCache, upstream: str,
                 observe: Callable[[float, list[str]], None] | None = None,
                 header: HeaderName = DEFAULT_HEADER) -> None:
        self.policy = policy
        self.header = header
        self.field_names = field_names(header)
        self.observe = observe  # (seconds, levels) after each classified batch, for metrics
        self.cache = cache
        self.upstream = upstream
        self.keep_addresses = policy_needs_addresses(policy)
        self.fingerprint = verdict_fingerprint(policy, header)
        self._memory: dict[MailboxKey, dict[int, Tagged]] = {}
        self.unclassifiable = Tagged(policy.levels.highest,
                                     render_unclassified(policy.levels.highest, header), ())

    def _tag(self, features: MessageFeatures, spoofs: tuple[int, ...]) -> Tagged:
        verdict = evaluate(features, self.policy)
        return Tagged(verdict.level.level, render_header(verdict, self.header), spoofs)

    def known(self, key: MailboxKey, uids: Sequence[int]) -> dict[int, Tagged]:
        memory = self._memory.setdefault(key, {})
        # (a SELECT asks for every message of the mailbox: the filters run in C)
        missing = list(filterfalse(memory.__contains__, uids))
        fingerprint = self.fingerprint
        if missing and fingerprint is not None:
            levels = self.policy.levels
            for uid, (level, block, spoofs) in self.cache.get_verdicts(key, missing, fingerprint,
                                                                       FEATURES_VERSION).items():
                if level in levels and len(block) == HEADER_LENGTH:  # else judged again below
                    memory[uid] = Tagged(level, block, spoofs)
            missing = [uid for uid in missing if uid not in memory]
        if missing:
            fresh: list[tuple[int, StoredVerdict]] = []
            for uid, entry in self.cache.get_many(key, missing).items():
                if entry.features_version != FEATURES_VERSION:
                    continue
                if self.keep_addresses and not entry.clear_addresses:
                    continue  # stored without addresses; this policy needs them: read again
                data = entry.features  # freshly decoded: ours to complete
                # the key says whose and where: the stored features leave both out
                data["account"], data["mailbox"] = key.account, key.mailbox
                try:
                    features = MessageFeatures.from_dict(data)
                except (KeyError, ValueError, TypeError):
                    continue
                if not self.policy.can_judge(features):
                    continue  # a rule reads a header these features did not keep: read again
                memory[uid] = tagged = self._tag(features, entry.spoofs)
                if fingerprint is not None:
                    fresh.append((uid, StoredVerdict(fingerprint, tagged.level, tagged.block)))
            self.cache.put_verdicts(key, fresh)
        return {uid: memory[uid] for uid in uids if uid in memory}

    def classify(self, key: MailboxKey, headers: Sequence[tuple[int, bytes]]) -> dict[int, Tagged]:
        started = time.monotonic()
        memory = self._memory.setdefault(key, {})
        context = MessageContext(key.account, key.mailbox, None, self.policy.header_names, self.header.lower)
        result: dict[int, Tagged] = {}
        entries = []
        for uid, header in headers:
            features = extract_features(header, context)
            spoofs = spoof_offsets(header, self.field_names)
            tagged = self._tag(features, spoofs)
            memory[uid] = result[uid] = tagged
            stored = (features if self.keep_addresses else redact(features)).to_dict()
            stored["account"] = stored["mailbox"] = ""  # in the key, as digests
            verdict = (None if self.fingerprint is None
                       else StoredVerdict(self.fingerprint, tagged.level, tagged.block))
            entries.append((uid, CachedEntry(stored, FEATURES_VERSION, self.keep_addresses, spoofs, verdict)))
        self.cache.put_many(key, entries)
        if self.observe is not None and result:
            self.observe(time.monotonic() - started, [tagged.level for tagged in result.values()])
        return result


class SessionClassifier:
    """``Classifier`` for one account at one clearance (``None`` clearance: sees everything)."""

    header_length = HEADER_LENGTH

    def __init__(self, memory: VerdictMemory, account: str, clearance: str | None) -> None:
        self.memory = memory
        self.account = account
        self.clearance = clearance
        self._levels = memory.policy.levels
        self.header_names = memory.field_names

    def _key(self, mailbox: str, uidvalidity: int) -> MailboxKey:
        return MailboxKey(self.memory.upstream, self.account, mailbox, uidvalidity)

    def known(self, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> dict[int, Tagged]:
        return self.memory.known(self._key(mailbox, uidvalidity), uids)

    def classify(self, mailbox: str, uidvalidity: int, headers: Sequence[tuple[int, bytes]]
                 ) -> dict[int, Tagged]:
        return self.memory.classify(self._key(mailbox, uidvalidity), headers)

    def visible(self, level: str) -> bool:
        return self.clearance is None or self._levels.visible(level, self.clearance)

    @property
    def hides_anything(self) -> bool:
        return self.clearance is not None and self.clearance != self._levels.highest

    def unclassifiable(self) -> Tagged:
        return self.memory.unclassifiable
