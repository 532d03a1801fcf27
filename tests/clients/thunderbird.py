"""Run Debian's real Thunderbird headless as an IMAP test client.

``sync_mailbox()`` builds a throw-away profile for one IMAP account, starts
``thunderbird --headless``, waits until Thunderbird has downloaded the bodies of
INBOX into its offline store, quits it cleanly and returns the messages read back
from that store, byte for byte as the server sent them.

The profile is written without any UI:

* ``user.js`` carries the account, server and identity prefs plus prefs that keep
  Thunderbird quiet (no start page, no telemetry, no account wizard, no network
  lookups of its own);
* the password goes into the login store (``logins.json``, encrypted with the key
  in ``key4.db``) through Thunderbird's bundled ``libnss3`` loaded with ctypes in a
  child Python process: the bundled NSS needs Thunderbird's ``libnssutil3`` first
  in the library path, which must not leak into the test process;
* the test CA is imported into the profile's certificate database with ``certutil``.
  Thunderbird verifies like Firefox (mozilla::pkix): the server must present a leaf
  certificate signed by that CA; a self-signed ``CA:TRUE`` certificate used directly
  by the server fails with ``MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY``.

Thunderbird's autosync downloads bodies for offline use only while the application
is idle: 10 s without user input (hard-coded, no pref changes it) or 5 s after the
window lost focus.  By default the driver starts Marionette (built into Thunderbird)
and sends the same "mail:appIdle" notification the blur timer would, so bodies are
fetched right after the headers, about 2.5 s after launch; Marionette also gives a
clean quit (SIGTERM makes Thunderbird exit at once, status -15).

Reading the store back (see ``split_offline_store``): Thunderbird writes a ``From -``
separator, its ``X-Mozilla-Status``/``X-Mozilla-Status2`` headers (LF-terminated),
the message with mboxrd quoting of ``>*From `` lines, a CRLF if the message lacks a
final line break, and a blank line.  The last two are told apart with the size of
the ``BODY[]`` literal in Thunderbird's IMAP log (``MOZ_LOG=IMAP:5``), matched by UID
through the folder summary (``INBOX.msf``, Mork: message key = UID,
``storeToken`` = offset in the mbox).  The summary's own ``size`` is no help: it is
updated to the stored size, CRLF included.

The module is also a small command line tool, used by ``sync_mailbox`` itself::

    echo '{"user": "...", "password": "..."}' | \\
        LD_LIBRARY_PATH=/usr/lib/thunderbird python thunderbird.py store-login PROFILE ORIGIN
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

THUNDERBIRD_DIR = Path(os.environ.get("CALIPROXY_THUNDERBIRD_DIR", "/usr/lib/thunderbird"))
THUNDERBIRD_BIN = THUNDERBIRD_DIR / "thunderbird"
CERTUTIL = "certutil"

SECURITY_SOCKET_TYPES = {"plain": 0, "starttls": 2, "tls": 3}


class ThunderbirdError(RuntimeError):
    """Thunderbird did not produce the expected offline store."""


@dataclass
class ThunderbirdResult:
    """What one Thunderbird run downloaded."""

    messages: list[bytes]
    """Raw messages from the INBOX offline store, in UID order (in store order if the
    folder summary could not be read)."""
    uids: list[int] | None
    """The UID of each message, from the folder summary (None if it was unreadable)."""
    log_path: Path
    """Thunderbird's stdout + stderr (with the IMAP protocol log when enabled)."""
    profile_dir: Path
    mbox_path: Path
    elapsed: float
    """Seconds from launch until the store held the expected messages."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: profile (to build it), marionette, first_body, stored (from launch),
    shutdown, total."""
    notes: list[str] = field(default_factory=list)
    """Anything that did not go as planned but did not prevent the result."""
    log_offset: int = 0
    """Where this run's part of ``log_path`` starts (a reused profile's log is appended to)."""


def thunderbird_available() -> bool:
    """True when the Thunderbird binary and ``certutil`` are installed."""
    return (
        THUNDERBIRD_BIN.is_file()
        and os.access(THUNDERBIRD_BIN, os.X_OK)
        and (THUNDERBIRD_DIR / "libnss3.so").is_file()
        and shutil.which(CERTUTIL) is not None
    )


# --------------------------------------------------------------------------- profile


def _pref_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


# Prefs that keep a headless Thunderbird from doing anything but the IMAP account.
QUIET_PREFS: dict[str, object] = {
    # no first-run UI, wizards or default-client questions
    "mailnews.start_page.enabled": False,
    "mailnews.start_page_override.mstone": "ignore",
    "mail.shell.checkDefaultClient": False,
    "mail.provider.enabled": False,
    "mail.accounthub.enabled": False,
    "mailnews.auto_config.fetchFromISP.enabled": False,
    "mailnews.auto_config.guess.enabled": False,
    "mail.rights.override": True,
    "mail.spotlight.firstRunDone": True,
    "mail.winsearch.firstRunDone": True,
    "toolkit.startup.max_resumed_crashes": -1,
    "browser.shell.checkDefaultBrowser": False,
    # stay online, whatever the network looks like
    "offline.autoDetect": False,
    "network.manage-offline-status": False,
    # no connections of its own
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "messenger.startup.action": 0,
    "mail.chat.enabled": False,
    "calendar.alarms.show": False,
    "calendar.alarms.playsound": False,
    "mail.biff.show_alert": False,
    "mail.biff.play_sound": False,
    "mail.biff.show_tray_icon": False,
    "mail.biff.animate_dock_icon": False,
    # less work: no full-text indexing, no remote images
    "mailnews.database.global.indexer.enabled": False,
    "mailnews.message_display.disable_remote_image": True,
    # keep everything offline-downloaded, however old or large
    "mail.server.default.offline_download": True,
    "mail.server.default.autosync_offline_stores": True,
    "mail.server.default.autosync_max_age_days": -1,
    "mail.server.default.limit_offline_message_size": False,
}


def _user_js(
    *, host: str, port: int, security: str, user: str, email: str, extra_prefs: dict[str, object]
) -> str:
    socket_type = SECURITY_SOCKET_TYPES[security]
    prefs: dict[str, object] = dict(QUIET_PREFS)
    prefs.update(
        {
            "mail.accountmanager.accounts": "account1,account2",
            "mail.accountmanager.defaultaccount": "account1",
            "mail.accountmanager.localfoldersserver": "server2",
            "mail.account.account1.server": "server1",
            "mail.account.account1.identities": "id1",
            "mail.account.account2.server": "server2",
            "mail.identity.id1.fullName": "Thunderbird Test",
            "mail.identity.id1.useremail": email,
            "mail.identity.id1.valid": True,
            "mail.identity.id1.draft_folder": f"imap://{user}@{host}/Drafts",
            "mail.identity.id1.fcc_folder": f"imap://{user}@{host}/Sent",
            "mail.server.server1.type": "imap",
            "mail.server.server1.name": "caliproxy test account",
            "mail.server.server1.hostname": host,
            "mail.server.server1.realhostname": host,
            "mail.server.server1.port": port,
            "mail.server.server1.userName": user,
            "mail.server.server1.realuserName": user,
            "mail.server.server1.socketType": socket_type,
            "mail.server.server1.authMethod": 3,  # cleartext password (AUTHENTICATE PLAIN)
            "mail.server.server1.directory-rel": f"[ProfD]ImapMail/{host}",
            "mail.server.server1.login_at_startup": True,
            "mail.server.server1.check_new_mail": True,
            "mail.server.server1.check_time": 1,
            "mail.server.server1.offline_download": True,
            "mail.server.server1.autosync_offline_stores": True,
            "mail.server.server1.autosync_max_age_days": -1,
            "mail.server.server1.limit_offline_message_size": False,
            "mail.server.server1.spamLevel": 0,
            "mail.server.server1.moveOnSpam": False,
            "mail.server.server2.type": "none",
            "mail.server.server2.name": "Local Folders",
            "mail.server.server2.hostname": "Local Folders",
            "mail.server.server2.userName": "nobody",
            "mail.server.server2.directory-rel": "[ProfD]Mail/Local Folders",
        }
    )
    prefs.update(extra_prefs)
    lines = ["// Generated for a caliproxy test run: one IMAP account, no UI."]
    lines += [f"user_pref({json.dumps(k)}, {_pref_literal(v)});" for k, v in prefs.items()]
    return "\n".join(lines) + "\n"


def _nss_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(THUNDERBIRD_DIR), os.environ.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def _store_login(profile: Path, origin: str, user: str, password: str) -> None:
    """Write ``logins.json`` + ``key4.db`` through the bundled NSS, in a child process."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "store-login", str(profile), origin],
        input=json.dumps({"user": user, "password": password}).encode(),
        env=_nss_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ThunderbirdError(
            "could not write Thunderbird's login store: "
            + (proc.stderr or proc.stdout).decode(errors="replace").strip()
        )


def _import_ca(profile: Path, ca_pem: Path) -> None:
    proc = subprocess.run(
        [
            CERTUTIL,
            "-A",
            "-d",
            f"sql:{profile}",
            "-n",
            "caliproxy test CA",
            "-t",
            "C,,",
            "-i",
            str(ca_pem),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ThunderbirdError(
            f"certutil could not import {ca_pem}: "
            + (proc.stderr or proc.stdout).decode(errors="replace").strip()
        )


def build_profile(
    profile: Path,
    *,
    host: str,
    port: int,
    security: str,
    user: str,
    password: str,
    ca_pem: Path | None,
    email: str | None = None,
    extra_prefs: dict[str, object] | None = None,
) -> None:
    """Create a Thunderbird profile for one IMAP account in the (new) directory ``profile``."""
    if security not in SECURITY_SOCKET_TYPES:
        raise ValueError(f"security must be one of {sorted(SECURITY_SOCKET_TYPES)}: {security!r}")
    profile.mkdir(parents=True)
    (profile / "user.js").write_text(
        _user_js(
            host=host,
            port=port,
            security=security,
            user=user,
            email=email or (user if "@" in user else f"{user}@example.test"),
            extra_prefs=extra_prefs or {},
        )
    )
    _store_login(profile, f"imap://{host}", user, password)
    if ca_pem is not None:
        _import_ca(profile, Path(ca_pem))


# --------------------------------------------------------------------------- mbox

_SEPARATOR = re.compile(rb"^From [^\n]*\n", re.MULTILINE)
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
# Thunderbird's own headers, in this order, at the top of every stored message
# (terminated by a bare LF on Linux, whatever the message uses).
_MOZILLA_HEADERS = (b"X-Mozilla-Status: ", b"X-Mozilla-Status2: ", b"X-Mozilla-Keys: ")


def split_offline_store(data: bytes) -> list[tuple[int, bytes]]:
    """Split an mbox offline store into ``(offset, stored message)`` pairs.

    Thunderbird stores each message as::

        From - <date>CRLF
        X-Mozilla-Status: 0001LF
        X-Mozilla-Status2: 00000000LF
        <the message, every line matching ``>*From `` escaped by one more ">"
         (mboxrd), and a CRLF appended when it does not end with a line break>
        CRLF

    This undoes the separator line, Thunderbird's headers and the escaping; the
    stored message still ends with that last (blank line) CRLF, see
    ``unstore_message``.
    """
    starts = [m.start() for m in _SEPARATOR.finditer(data)]
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[start:end]
        chunk = chunk[chunk.index(b"\n") + 1 :]
        for name in _MOZILLA_HEADERS:
            if chunk.startswith(name):
                chunk = chunk[chunk.index(b"\n") + 1 :]
        out.append((start, _ESCAPED_FROM.sub(rb"\1", chunk)))
    return out


def unstore_message(stored: bytes, size: int | None = None) -> bytes:
    """The message as the server sent it, from one ``split_offline_store`` entry.

    Thunderbird ends every stored message with a blank line, after adding a line
    break to a message that lacks a final one.  ``size`` (the message size from the
    folder summary, i.e. the server's RFC822.SIZE) tells these two apart; without it
    a message that did not end with a line break comes back with a CRLF appended.
    """
    if stored.endswith(b"\r\n"):
        body = stored[:-2]
    elif stored.endswith(b"\n"):
        body = stored[:-1]
    else:  # the message was still being written
        return stored
    if size is not None and len(body) != size:
        for eol in (b"\r\n", b"\n"):
            if len(body) - len(eol) == size and body.endswith(eol):
                return body[: -len(eol)]
    return body


def parse_offline_store(data: bytes, sizes: dict[int, int] | None = None) -> list[bytes]:
    """All messages of an mbox offline store; ``sizes`` maps store offsets to sizes."""
    sizes = sizes or {}
    return [unstore_message(stored, sizes.get(off)) for off, stored in split_offline_store(data)]


# --------------------------------------------------------------------------- summary (Mork)

_MSGS_SCOPE = "ns:msg:db:row:scope:msgs:all"
_MORK_COLUMN = re.compile(r"\^?([^=^)]*)")


class _MorkReader:
    """Just enough of Mork (the ``.msf`` folder summary format) to read its rows."""

    def __init__(self, text: str) -> None:
        # drop aborted transaction groups, then the group markers of committed ones
        text = re.sub(r"@\$\$\{\w+\{@(?:(?!@\$\$).)*@\$\$\}~[^}]*\}@", "", text, flags=re.DOTALL)
        self.text = re.sub(r"@\$\$[{}]\w*[{}]@", " ", text)
        self.pos = 0
        self.columns: dict[str, str] = {}
        self.atoms: dict[str, str] = {}
        self.rows: dict[tuple[str, str], dict[str, str]] = {}

    def parse(self) -> dict[tuple[str, str], dict[str, str]]:
        self._items(None, end="")
        return self.rows

    def _skip(self) -> None:
        t = self.text
        while self.pos < len(t):
            if t[self.pos].isspace():
                self.pos += 1
            elif t.startswith("//", self.pos):
                nl = t.find("\n", self.pos)
                self.pos = len(t) if nl < 0 else nl + 1
            else:
                return

    def _items(self, table_scope: str | None, end: str) -> None:
        t = self.text
        while True:
            self._skip()
            if self.pos >= len(t):
                return
            c = t[self.pos]
            if c == end:
                self.pos += 1
                return
            self.pos += 1
            if c == "<":
                self._dict()
            elif c == "{":
                self._table()
            elif c == "[":
                self._row(table_scope)
            elif c == "(":
                self._cell()
            else:  # a row reference inside a table, or noise: skip the token
                while self.pos < len(t) and t[self.pos] not in " \t\r\n{}[]()<>":
                    self.pos += 1

    def _dict(self) -> None:
        target = self.atoms
        while True:
            self._skip()
            c = self.text[self.pos]
            self.pos += 1
            if c == ">":
                return
            if c == "<":  # meta dict, e.g. <(a=c)>: this dict defines column names
                meta = self.text[self.pos : self.text.index(">", self.pos)]
                self.pos += len(meta) + 1
                if re.search(r"\(a=c\)", meta):
                    target = self.columns
            elif c == "(":
                key, value = self._cell()
                target[key.lower()] = value

    def _table(self) -> None:
        head = self._token()
        scope = self._scope(head.partition(":")[2])
        self._skip()
        if self.text.startswith("{", self.pos):  # table meta, e.g. {(k^96:c)(s=9)}
            self.pos = self.text.index("}", self.pos) + 1
        self._items(scope, end="}")

    def _row(self, table_scope: str | None) -> None:
        head = self._token()
        cut = head.startswith("-")
        row_id, _, scope_ref = head.lstrip("-").partition(":")
        scope = self._scope(scope_ref) if scope_ref else table_scope
        key = (scope or "", row_id.lower())
        cells = {} if cut else self.rows.get(key, {})
        while True:
            self._skip()
            c = self.text[self.pos]
            self.pos += 1
            if c == "]":
                break
            if c == "(":
                col, value = self._cell()
                cells[self.columns.get(col, col)] = value
            elif c == "[":  # row meta
                self.pos = self.text.index("]", self.pos) + 1
        self.rows[key] = cells

    def _token(self) -> str:
        start = self.pos
        while self.text[self.pos] not in " \t\r\n{}[]()<>":
            self.pos += 1
        return self.text[start : self.pos]

    def _scope(self, ref: str) -> str:
        return self.columns.get(ref[1:].lower(), ref[1:]) if ref.startswith("^") else ref

    def _cell(self) -> tuple[str, str]:
        """Parse ``(col=value)``, ``(^col=value)`` or ``(^col^atom)`` after its "("."""
        t = self.text
        m = _MORK_COLUMN.match(t, self.pos)
        assert m is not None
        # the writer wraps long lines anywhere outside values, e.g. between a key and "="
        col = re.sub(r"\s+", "", m.group(1))
        if t[self.pos] == "^":
            col = col.lower()
        self.pos = m.end()
        if t[self.pos] == "^":
            end = t.index(")", self.pos)
            value = self.atoms.get(re.sub(r"\s+", "", t[self.pos + 1 : end]).lower(), "")
            self.pos = end + 1
            return col, value
        self.pos += 1  # "="
        out = bytearray()
        while True:
            c = t[self.pos]
            if c == ")":
                self.pos += 1
                return col, out.decode("utf-8", errors="replace")
            if c == "\\":
                nxt = t[self.pos + 1]
                if nxt in "\r\n":  # line continuation
                    self.pos += 2
                    if nxt == "\r" and t[self.pos : self.pos + 1] == "\n":
                        self.pos += 1
                    continue
                out += nxt.encode("latin-1", errors="replace")
                self.pos += 2
            elif c == "$":
                out.append(int(t[self.pos + 1 : self.pos + 3], 16))
                self.pos += 3
            else:  # the text was decoded as latin-1: this gives the byte back
                out += c.encode("latin-1", errors="replace")
                self.pos += 1


def read_summary(msf_path: Path) -> dict[int, dict[str, str]]:
    """The message rows of a folder summary (``.msf``): ``{message key: {column: value}}``.

    For IMAP folders the key is the UID; ``size`` is the RFC822.SIZE (hex), and for
    messages in the offline store ``storeToken`` is their offset in the mbox (decimal)
    and ``offlineMsgSize`` their stored size (hex).
    """
    rows = _MorkReader(msf_path.read_text(encoding="latin-1")).parse()
    out: dict[int, dict[str, str]] = {}
    for (scope, row_id), cells in rows.items():
        if scope == _MSGS_SCOPE and re.fullmatch(r"[0-9a-f]+", row_id):
            out[int(row_id, 16)] = cells
    return out


# --------------------------------------------------------------------------- process

# "* 3 FETCH (UID 3 RFC822.SIZE 175 BODY[] {175}" on a connection with INBOX selected
_INBOX_BODY_FETCH = re.compile(
    rb":S-INBOX:CreateNewLineFromSocket: \* \d+ FETCH \((?=[^\n]*\bUID (\d+))[^\n]*"
    rb"\bBODY\[\] \{(\d+)\}[ \t\r]*$",
    re.MULTILINE,
)
# TLS verification failed / every authentication method was refused: Thunderbird would wait
# for a user, so the run fails at once
_FATAL_LOG_LINES = re.compile(rb"Security error - error code=\S+|No remaining auth method")


class _LogWatcher:
    """Follows Thunderbird's log: fatal errors, and the INBOX bodies the server sent."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""
        self.fatal: str | None = None
        self.bodies: list[tuple[int, int]] = []
        """(UID, size) of every INBOX ``BODY[]`` literal, in the order they arrived."""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                new = f.read()
        except OSError:
            return
        self.offset += len(new)
        # a partial last line waits for the next look
        text, _, self.partial = (self.partial + new).rpartition(b"\n")
        if self.fatal is None and (m := _FATAL_LOG_LINES.search(text)):
            self.fatal = m.group(0).decode(errors="replace")
        self.bodies += [(int(u), int(n)) for u, n in _INBOX_BODY_FETCH.findall(text)]


class _Marionette:
    """A minimal client of Thunderbird's built-in Marionette server (JSON over TCP)."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.msg_id = 0
        self._read()  # greeting: {"applicationType": "gecko", "marionetteProtocol": 3}
        self.call("WebDriver:NewSession", {"capabilities": {}})
        self.call("Marionette:SetContext", {"value": "chrome"})

    def _read(self) -> object:
        while b":" not in self.buf:
            self._recv()
        length, _, self.buf = self.buf.partition(b":")
        n = int(length)
        while len(self.buf) < n:
            self._recv()
        packet, self.buf = self.buf[:n], self.buf[n:]
        return json.loads(packet)

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Marionette closed the connection")
        self.buf += chunk

    def call(self, command: str, params: dict[str, object]) -> object:
        self.msg_id += 1
        packet = json.dumps([0, self.msg_id, command, params]).encode()
        self.sock.sendall(b"%d:%s" % (len(packet), packet))
        while True:
            reply = self._read()
            if isinstance(reply, list) and reply[:2] == [1, self.msg_id]:
                break
        if reply[2]:
            raise RuntimeError(f"Marionette {command}: {reply[2]}")
        return reply[3]

    def run(self, script: str) -> object:
        return self.call("WebDriver:ExecuteScript", {"script": script, "args": []})

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# The autosync manager downloads bodies for offline use only while the application
# is idle: 10 s without user input, or the window blurred for 5 s.  A headless
# Thunderbird sees neither early, so tell it the app went idle, as its own
# AppIdleManager does on blur.
_IDLE_SCRIPT = 'Services.obs.notifyObservers(null, "mail:appIdle", "idle"); return true;'


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM Thunderbird, then SIGKILL whatever is left of its process group.

    Thunderbird exits at once on SIGTERM, without committing its summaries: the clean
    way out is Marionette's quit, tried before this when Marionette is up.
    """
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Thunderbird's child processes share its process group, which it leads
    # (start_new_session): whatever is left of that group is ours to kill.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _log_tail(log_path: Path, limit: int = 3000) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return "(no log)"


def _all_complete(stored: list[tuple[int, bytes]], bodies: list[tuple[int, int]]) -> bool:
    """True when the n-th stored message is as long as the n-th INBOX body in the log.

    Autosync appends bodies to the store in the order they arrive, which is the order
    the log shows them in.
    """
    if len(bodies) < len(stored):
        return False
    return all(
        len(unstore_message(raw, size)) == size for (_, raw), (_, size) in zip(stored, bodies)
    )


def _count_stored(mbox_path: Path) -> int:
    try:
        return len(split_offline_store(mbox_path.read_bytes()))
    except FileNotFoundError:
        return 0


def sync_mailbox(
    workdir: Path,
    *,
    host: str,
    port: int,
    security: str,
    user: str,
    password: str,
    ca_pem: Path | None,
    expect_messages: int,
    timeout: float = 90,
    settle: float | None = None,
    nudge_idle: bool = True,
    protocol_log: bool = True,
    extra_prefs: dict[str, object] | None = None,
    reuse_profile: bool = False,
    after_sync: Callable[[], int] | None = None,
) -> ThunderbirdResult:
    """Let a fresh headless Thunderbird download INBOX for offline use and read it back.

    ``security`` is ``"plain"``, ``"starttls"`` or ``"tls"`` (implicit TLS);
    ``ca_pem`` is the CA certificate Thunderbird should trust for the server's
    certificate (``None``: import nothing).  Returns once the offline store holds at
    least ``expect_messages`` messages and has not grown for ``settle`` seconds, after
    a clean shutdown of Thunderbird.

    ``nudge_idle`` tells Thunderbird through Marionette that the app is idle, so it
    downloads bodies right away instead of after 10 s; when that fails the run just
    takes longer.  ``protocol_log`` writes Thunderbird's IMAP log (``MOZ_LOG``) into
    the log file; it is also how a message without a final line break is told
    apart from one with it.

    ``reuse_profile`` starts Thunderbird again on the profile a previous call left in
    ``workdir`` (its offline store, folder summaries and login store kept), with only
    ``user.js`` written anew: the same account, now pointed at ``host``/``port``/
    ``security``.  Thunderbird reads ``user.js`` after ``prefs.js`` at every start, so
    its values win.  ``host`` and ``user`` must stay the same: the login store is keyed
    by ``imap://host`` and the offline store lives in ``ImapMail/<host>``, neither by
    port.  ``expect_messages`` counts the whole store, old messages included, and the
    result holds them all.

    ``after_sync``, when given, is called once, with Thunderbird still running, as soon
    as the store holds ``expect_messages`` complete messages; it returns how many more
    to wait for (e.g. after delivering new mail, which Thunderbird hears in IDLE).

    Raises ``ThunderbirdError`` (with the log's tail) when Thunderbird exits early,
    when TLS verification or every login method fails (seen in the protocol log: at
    once, as Thunderbird would wait for a user), or when the messages do not arrive
    within ``timeout`` seconds.  Thunderbird is never left running.
    """
    if expect_messages < 1:
        raise ValueError("expect_messages must be at least 1")
    if settle is None:
        # with the protocol log each body's completeness is checked, so little quiet is needed
        settle = 0.3 if protocol_log else 0.75
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    profile = workdir / "profile"
    home = workdir / "home"
    tmp = workdir / "tmp"
    log_path = workdir / "thunderbird.log"
    reusing = reuse_profile and profile.is_dir()
    for d in (home, tmp) if reusing else (profile, home, tmp):
        if d.exists():
            shutil.rmtree(d)
    home.mkdir()
    tmp.mkdir()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    prefs: dict[str, object] = {}
    if nudge_idle:
        # port 0: Marionette picks a free port and writes it to MarionetteActivePort
        prefs.update({"marionette.port": 0, "remote.prefs.recommended": False})
    prefs.update(extra_prefs or {})
    if reusing:
        if security not in SECURITY_SOCKET_TYPES:
            raise ValueError(f"security must be one of {sorted(SECURITY_SOCKET_TYPES)}: {security!r}")
        (profile / "user.js").write_text(
            _user_js(host=host, port=port, security=security, user=user,
                     email=user if "@" in user else f"{user}@example.test", extra_prefs=prefs)
        )
    else:
        build_profile(
            profile,
            host=host,
            port=port,
            security=security,
            user=user,
            password=password,
            ca_pem=ca_pem,
            extra_prefs=prefs,
        )
    timings["profile"] = time.monotonic() - t0
    mbox_path = profile / "ImapMail" / host / "INBOX"
    port_file = profile / "MarionetteActivePort"
    # a previous run's port file would name a port nobody listens on any more
    port_file.unlink(missing_ok=True)
    # what a reused profile already holds: completeness is checked on what comes after it
    already_stored = _count_stored(mbox_path)
    try:
        start_size = mbox_path.stat().st_size
    except FileNotFoundError:
        start_size = 0
    log_offset = log_path.stat().st_size if reusing and log_path.exists() else 0

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MOZ_LOG", "MOZ_LOG_FILE", "LD_LIBRARY_PATH")
    }
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_RUNTIME_DIR=str(tmp),
        MOZ_HEADLESS="1",
        MOZ_CRASHREPORTER_DISABLE="1",
        MOZ_DISABLE_AUTO_SAFE_MODE="1",
    )
    if protocol_log:
        env["MOZ_LOG"] = "IMAP:5,timestamp"
    cmd = [str(THUNDERBIRD_BIN), "--headless", "-profile", str(profile), "--no-remote"]
    with_marionette = nudge_idle
    if with_marionette:
        cmd += ["--marionette", "--remote-allow-system-access"]

    notes: list[str] = []
    marionette: _Marionette | None = None
    launched = time.monotonic()
    with open(log_path, "ab" if reusing else "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        deadline = launched + timeout
        last_size = -1
        changed_at = checked_at = launched
        unmatched_since: float | None = None
        nudged_at = 0.0
        nudge_failures = 0
        # the store size until which the idle nudge is repeated
        nudge_below = start_size
        watcher = _LogWatcher(log_path, offset=log_offset)
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            if proc.poll() is not None:
                raise ThunderbirdError(
                    f"Thunderbird exited early with status {proc.returncode}; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            watcher.poll()
            if watcher.fatal:
                raise ThunderbirdError(
                    f"Thunderbird failed: {watcher.fatal}; log {log_path}:\n{_log_tail(log_path)}"
                )
            try:
                size = mbox_path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size != last_size:
                last_size, changed_at = size, now
                if size > start_size and "first_body" not in timings:
                    timings["first_body"] = now - launched
            elif size and now - changed_at >= settle and now - checked_at >= settle / 2:
                # the store has stopped growing: done if it holds enough complete messages
                checked_at = now
                stored = split_offline_store(mbox_path.read_bytes())
                done = False
                if len(stored) >= expect_messages:
                    if not protocol_log or _all_complete(stored[already_stored:], watcher.bodies):
                        done = True
                    # the log should say how long each body is; if it cannot be matched,
                    # trust the quiet store after a while
                    elif unmatched_since is None:
                        unmatched_since = now
                    elif now - unmatched_since > 5 * settle + 2:
                        notes.append("the stored bodies do not match the protocol log's sizes")
                        done = True
                if done and after_sync is None:
                    break
                if done and after_sync is not None:
                    expect_messages += after_sync()
                    after_sync = None
                    unmatched_since = None
                    nudge_below = size
                    timings["after_sync"] = time.monotonic() - launched
            # until bodies flow, say "idle" every 2 s: the first may come before INBOX is known
            if nudge_idle and size <= nudge_below and now - nudged_at >= 2.0:
                nudged_at = now
                try:
                    if marionette is None and port_file.is_file():
                        marionette = _Marionette(int(port_file.read_text()), timeout=10)
                        timings["marionette"] = time.monotonic() - launched
                    if marionette is not None:
                        marionette.run(_IDLE_SCRIPT)
                except (OSError, ValueError, RuntimeError) as exc:
                    nudge_failures += 1
                    if marionette is not None:
                        marionette.close()
                        marionette = None
                    if nudge_failures >= 3:
                        notes.append(f"idle nudge failed, waiting for the natural idle: {exc!r}")
                        nudge_idle = False
            if now > deadline:
                raise ThunderbirdError(
                    f"after {timeout:.0f} s the offline store {mbox_path} holds "
                    f"{_count_stored(mbox_path)} of {expect_messages} messages; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
        stored_at = time.monotonic()
        timings["stored"] = stored_at - launched
        if marionette is None and with_marionette and port_file.is_file():
            # the bodies came without a nudge (e.g. new mail a reused profile downloads on
            # its own): Marionette is still the way to a clean quit
            try:
                marionette = _Marionette(int(port_file.read_text()), timeout=10)
            except (OSError, ValueError, RuntimeError) as exc:
                notes.append(f"could not reach Marionette to quit: {exc!r}")
        if marionette is not None:
            # a clean quit: SIGTERM makes Thunderbird exit at once, without committing
            # its folder summaries
            try:
                marionette.sock.settimeout(30)
                marionette.call("Marionette:Quit", {"flags": ["eAttemptQuit"]})
                proc.wait(timeout=30)
            except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
                notes.append(f"clean quit through Marionette failed: {exc!r}")
            marionette.close()
            marionette = None
        _terminate(proc, grace=20)
        timings["shutdown"] = time.monotonic() - stored_at
    except BaseException:
        if marionette is not None:
            marionette.close()
        _terminate(proc, grace=5)
        raise
    if proc.returncode != 0:
        notes.append(f"Thunderbird exited with status {proc.returncode}")

    # Read back: separators split the store; the summary maps store offsets to UIDs;
    # the protocol log has the size of each body as the server sent it.
    data = mbox_path.read_bytes()
    stored = split_offline_store(data)
    uids: list[int] | None = None
    sizes: dict[int, int] = {}
    try:
        summary = read_summary(mbox_path.with_name("INBOX.msf"))
        by_offset = {
            int(cells["storeToken"]): uid
            for uid, cells in summary.items()
            if cells.get("storeToken", "").isdigit()
        }
        if all(off in by_offset for off, _ in stored):
            uids = [by_offset[off] for off, _ in stored]
        else:
            notes.append("the folder summary does not match the offline store")
    except (OSError, ValueError, IndexError, AssertionError) as exc:
        notes.append(f"could not read the folder summary: {exc!r}")
    if uids is not None:
        # every run's log: a reused profile holds bodies an earlier run downloaded
        whole_log = _LogWatcher(log_path)
        whole_log.poll()
        body_sizes = dict(whole_log.bodies)
        sizes = {off: body_sizes[uid] for (off, _), uid in zip(stored, uids) if uid in body_sizes}
    messages = [unstore_message(raw, sizes.get(off)) for off, raw in stored]
    labels = [f"UID {u}" for u in uids] if uids else [f"message at {o}" for o, _ in stored]
    for (off, _), message, label in zip(stored, messages, labels):
        if off in sizes and len(message) != sizes[off]:
            notes.append(f"{label}: {len(message)} bytes stored, the server sent {sizes[off]}")
    if uids is not None:
        # autosync fetches big folders in its own order (small messages first)
        order = sorted(range(len(uids)), key=uids.__getitem__)
        uids = [uids[i] for i in order]
        messages = [messages[i] for i in order]
    if len(messages) < expect_messages:
        raise ThunderbirdError(
            f"after shutdown the offline store {mbox_path} holds {len(messages)} of "
            f"{expect_messages} messages; log {log_path}:\n{_log_tail(log_path)}"
        )
    timings["total"] = time.monotonic() - t0
    return ThunderbirdResult(
        messages=messages,
        uids=uids,
        log_path=log_path,
        profile_dir=profile,
        mbox_path=mbox_path,
        elapsed=stored_at - launched,
        timings=timings,
        notes=notes,
        log_offset=log_offset,
    )


# --------------------------------------------------------------------------- NSS (child)


def _nss_store_login(profile: str, origin: str, user: str, password: str) -> None:
    """Runs in a child process whose LD_LIBRARY_PATH starts with Thunderbird's directory."""
    import ctypes

    class SECItem(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint), ("data", ctypes.c_void_p), ("len", ctypes.c_uint)]

    nss = ctypes.CDLL(str(THUNDERBIRD_DIR / "libnss3.so"))
    nss.NSS_InitReadWrite.argtypes = [ctypes.c_char_p]
    nss.PK11_GetInternalKeySlot.restype = ctypes.c_void_p
    nss.PK11_NeedUserInit.argtypes = [ctypes.c_void_p]
    nss.PK11_InitPin.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    nss.PK11_FreeSlot.argtypes = [ctypes.c_void_p]
    nss.PK11SDR_Encrypt.argtypes = [
        ctypes.POINTER(SECItem),
        ctypes.POINTER(SECItem),
        ctypes.POINTER(SECItem),
        ctypes.c_void_p,
    ]
    nss.SECITEM_ZfreeItem.argtypes = [ctypes.POINTER(SECItem), ctypes.c_int]
    nss.PORT_GetError.restype = ctypes.c_int

    def check(status: int, what: str) -> None:
        if status != 0:
            raise SystemExit(f"{what} failed, NSS error {nss.PORT_GetError()}")

    check(nss.NSS_InitReadWrite(f"sql:{profile}".encode()), "NSS_InitReadWrite")
    slot = nss.PK11_GetInternalKeySlot()
    if not slot:
        raise SystemExit("PK11_GetInternalKeySlot failed")
    if nss.PK11_NeedUserInit(slot):
        check(nss.PK11_InitPin(slot, None, b""), "PK11_InitPin")

    def encrypt(text: str) -> str:
        raw = text.encode()
        buf = ctypes.create_string_buffer(raw, len(raw))
        data = SECItem(0, ctypes.cast(buf, ctypes.c_void_p), len(raw))
        keyid = SECItem(0, None, 0)
        out = SECItem(0, None, 0)
        check(
            nss.PK11SDR_Encrypt(ctypes.byref(keyid), ctypes.byref(data), ctypes.byref(out), None),
            "PK11SDR_Encrypt",
        )
        enc = ctypes.string_at(out.data, out.len)
        nss.SECITEM_ZfreeItem(ctypes.byref(out), 0)
        return base64.b64encode(enc).decode()

    now_ms = int(time.time() * 1000)
    store = {
        "nextId": 2,
        "logins": [
            {
                "id": 1,
                "hostname": origin,
                "httpRealm": origin,
                "formSubmitURL": None,
                "usernameField": "",
                "passwordField": "",
                "encryptedUsername": encrypt(user),
                "encryptedPassword": encrypt(password),
                "guid": f"{{{uuid.uuid4()}}}",
                "encType": 1,
                "timeCreated": now_ms,
                "timeLastUsed": now_ms,
                "timePasswordChanged": now_ms,
                "timesUsed": 1,
            }
        ],
        "potentiallyVulnerablePasswords": [],
        "dismissedBreachAlertsByLoginGUID": {},
        "version": 3,
    }
    nss.PK11_FreeSlot(slot)
    check(nss.NSS_Shutdown(), "NSS_Shutdown")
    Path(profile, "logins.json").write_text(json.dumps(store))


def _main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "store-login":
        secret = json.loads(sys.stdin.read())
        _nss_store_login(argv[1], argv[2], secret["user"], secret["password"])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
