"""A message's verdict: its privacy index and its confidentiality level, judged together.

The one entry point callers need: ``judge`` from raw bytes, or ``evaluate`` from features a cache
kept.

Pure module: standard library only plus ``caliproxy.privacy.*``; no IO, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass

from caliproxy.privacy.confidentiality import LevelVerdict, confidentiality
from caliproxy.privacy.features import (
    PRIVACY_HEADER_NAME,
    MessageContext,
    MessageFeatures,
    extract_features,
)
from caliproxy.privacy.index import PrivacyIndex, privacy_index
from caliproxy.privacy.policy import Policy


@dataclass(frozen=True)
class Verdict:
    """The privacy index and confidentiality level of one message under one policy."""

    index: PrivacyIndex
    level: LevelVerdict


def evaluate(features: MessageFeatures, policy: Policy) -> Verdict:
    """Judge already-extracted features (for instance from a cache) under ``policy``."""
    index = privacy_index(features, policy)
    return Verdict(index, confidentiality(features, index, policy))


def judge(
    raw: bytes,
    policy: Policy,
    *,
    account: str = "",
    mailbox: str = "INBOX",
    size: int | None = None,
    body: bytes | None = None,
    privacy_header: str = PRIVACY_HEADER_NAME,
) -> tuple[MessageFeatures, Verdict]:
    """Extract features from header (or whole-message) bytes and judge them under ``policy``.

    ``privacy_header`` is our header's configured name (fields of it are counted, not believed)."""
    context = MessageContext(account, mailbox, size, policy.header_names, privacy_header)
    features = extract_features(raw, context, body=body)
    return features, evaluate(features, policy)
