"""Logging setup: human lines or JSON lines on stderr (journald), behind a redaction filter.

The redaction filter is the last line of defence: code never logs passwords, AUTH payloads,
bodies, subjects or addresses, and this filter masks anything that looks like one if a
message or an exception text carries it anyway (IMAP LOGIN arguments, base64 SASL blobs, e-mail
addresses, Subject lines).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # IMAP LOGIN user password / AUTHENTICATE initial responses
    (re.compile(r"(?i)\b(LOGIN)\s+\S+\s+\S+"), r"\1 [redacted]"),
    (re.compile(r"(?i)\b(AUTHENTICATE\s+\S+)\s+\S+"), r"\1 [redacted]"),
    (re.compile(r"(?i)\b(AUTH\s+(?:PLAIN|LOGIN))\s+\S+"), r"\1 [redacted]"),
    # long base64 runs (SASL payloads, encoded bodies)
    # (mixed case plus a digit, "+", "/" or "=": paths and identifiers are left alone)
    (re.compile(r"(?<![\w/.-])(?=[A-Za-z0-9+/=]*[A-Z])(?=[A-Za-z0-9+/=]*[a-z])"
                r"(?=[A-Za-z0-9+/=]*[0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![\w/.@-])"),
     "[base64 redacted]"),
    # e-mail addresses
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[address]"),
    # header lines that carry content
    (re.compile(r"(?im)^(subject|from|to|cc|bcc|reply-to):.*$"), r"\1: [redacted]"),
    (re.compile(r"(?i)(password|passwd|pass)\s*[=:]\s*\S+"), r"\1=[redacted]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) through :func:`redact`.

    Account names are the one identity logs keep (the audit line needs them); they are passed as
    ``extra={"account": ...}`` or quoted, and kept unless the login name is an e-mail address:
    that one becomes ``[address]`` like every other (the audit line then still has the listener,
    client address and clearance).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            exception = (logging.Formatter().formatException(record.exc_info)
                         if record.exc_info else None)
        except ImportError:
            return False  # interpreter shutdown: better a lost line than an unredacted one
        record.msg = redact(message)
        record.args = None
        if exception is not None:
            record.exc_text = redact(exception)
            record.exc_info = None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "human") -> None:
    """Route every logger (Twisted's included) through redaction to stderr."""
    apply_logging(level, fmt)
    # Twisted's own log events (e.g. "while verifying certificate") go to the same place.
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)


def apply_logging(level: str, fmt: str = "human") -> None:
    """The level and format of the stderr handler (again on a reload)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_handlers = list(root.handlers)
    # The new handler first: a record logged in between must never find no handler (logging's
    # last resort would write it unredacted).
    root.addHandler(handler)
    for old in old_handlers:
        root.removeHandler(old)
    root.setLevel(getattr(logging, level.upper()))
