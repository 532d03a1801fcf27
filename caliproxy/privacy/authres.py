"""Reading ``Authentication-Results`` fields (RFC 8601) into method results per authserv-id.

Owns the grammar only. Whether a field is believed (its authserv-id is one the policy trusts and
it stands above the trusted boundary hop) is decided by ``evidence.py``.

Pure module: standard library only; no IO, no logging. Never raises on any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from caliproxy.privacy.addresses import domain_of, normalise_address, normalise_domain

# RFC 8601 §2.2:
#   authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ( no-result / 1*resinfo ) [CFWS] CRLF
#   authserv-id     = value            ; RFC 2045 token / quoted-string
#   no-result       = [CFWS] ";" [CFWS] "none"
#   resinfo         = [CFWS] ";" methodspec [ CFWS reasonspec ] [ CFWS 1*propspec ]
#   methodspec      = [CFWS] method [CFWS] "=" [CFWS] result
#   method          = Keyword [ [CFWS] "/" [CFWS] method-version ]
#   reasonspec      = "reason" [CFWS] "=" [CFWS] value
#   propspec        = ptype [CFWS] "." [CFWS] property [CFWS] "=" pvalue
# Comments are dropped first (quoted-strings are kept whole so a ";" or "(" inside one is data);
# then the payload splits on ";" outside quotes.
_QUOTED_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\((?:[^()\\]|\\.)*\)')
_QUOTED_OR_SEMICOLON = re.compile(r'"(?:[^"\\]|\\.)*"|;')
_METHOD = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*(?:/\s*\d+\s*)?=\s*([A-Za-z0-9_-]+)")
# A quoted-string (a reason="..." text) is consumed whole so nothing inside it reads as a property.
_PROPERTY = re.compile(
    r'"(?:[^"\\]|\\.)*"|([A-Za-z0-9_-]+)\s*\.\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;"]+)'
)
# Nested comments: innermost first, a bounded number of passes keeps hostile input linear.
_COMMENT_PASSES = 4


@dataclass(frozen=True)
class MethodResult:
    """One ``method=result`` with the domain it speaks for.

    ``domain`` is ``header.d`` (or the domain of ``header.i``) for DKIM, ``header.from`` for
    DMARC, the domain of ``smtp.mailfrom`` (else ``smtp.helo``) for SPF; empty when absent.
    """

    method: str
    result: str
    domain: str


@dataclass(frozen=True)
class AuthResultsField:
    """One ``Authentication-Results`` field and its position in the header block (0 = top)."""

    position: int
    authserv_id: str
    results: tuple[MethodResult, ...]


def _strip_comments(text: str) -> str:
    def keep_quoted(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else " "

    for _ in range(_COMMENT_PASSES):
        if "(" not in text:
            break
        stripped = _QUOTED_OR_COMMENT.sub(keep_quoted, text)
        if stripped == text:
            break
        text = stripped
    return text


def _split_semicolons(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    for match in _QUOTED_OR_SEMICOLON.finditer(text):
        if match.group(0) == ";":
            parts.append(text[start : match.start()])
            start = match.end()
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _property_domain(method: str, props: dict[str, str]) -> str:
    if method == "dkim":
        if "header.d" in props:
            return normalise_domain(props["header.d"])
        identity = props.get("header.i", "")
        return normalise_domain(identity.rpartition("@")[2]) if identity else ""
    if method == "dmarc":
        return normalise_domain(props.get("header.from", ""))
    if method == "spf":
        mailfrom = props.get("smtp.mailfrom", "")
        if mailfrom:
            address = normalise_address(mailfrom)
            return domain_of(address) if address else normalise_domain(mailfrom.lstrip("@"))
        return normalise_domain(props.get("smtp.helo", ""))
    return ""


def parse_authentication_results(value: str, position: int) -> AuthResultsField:
    """Read one unfolded ``Authentication-Results`` value; malformed parts are skipped."""
    parts = _split_semicolons(_strip_comments(value))
    head = parts[0].split()
    authserv_id = _unquote(head[0]).lower().rstrip(".") if head else ""
    results: list[MethodResult] = []
    for part in parts[1:]:
        method_match = _METHOD.match(part)
        if method_match is None:
            continue  # includes the "none" of a no-result payload
        method = method_match.group(1).lower()
        result = method_match.group(2).lower()
        props = {
            f"{m.group(1).lower()}.{m.group(2).lower()}": _unquote(m.group(3))
            for m in _PROPERTY.finditer(part, method_match.end())
            if m.group(1) is not None
        }
        results.append(MethodResult(method, result, _property_domain(method, props)))
    return AuthResultsField(position, authserv_id, tuple(results))
