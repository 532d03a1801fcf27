"""A real Dovecot 2.3 IMAP server on loopback, for the demo and the integration tests.

Owns: generating a self-contained ``dovecot.conf`` (its own base_dir, state_dir and instance_name,
so several instances run side by side), the passwd-file users, the Maildir tree, starting the
daemon, waiting until it greets, stopping it for good, and putting mail into it (LMTP delivery,
``doveadm save``, or a bulk Maildir load).

It must not import the proxy rings (net/, imap/, smtp/, privacy/) nor any test-only package
(trustme, pytest): the demo runs it in production installs.

It needs root: Dovecot starts as root and drops to the ``vmail`` user for mail access (it refuses
to let root own mail), and the generated configuration uses Dovecot 2.3 syntax only.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from caliproxy.errors import CaliproxyError

MAIL_USER = "vmail"
LOOPBACK = "127.0.0.1"

# A unix socket path must fit in sun_path (108 bytes on Linux). Dovecot's longest socket names
# under base_dir ("login/imap-hibernate", "anvil-auth-penalty", ...) are ~25 bytes, so base_dir
# must stay well below the limit.
_MAX_BASE_DIR_LEN = 70

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class DovecotError(CaliproxyError):
    """Dovecot is missing, the wrong version, or did not start, stop or accept mail."""


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` binary, or None when Dovecot is not installed."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )


def dovecot_version(binary: str | None = None) -> str:
    """The installed Dovecot version, e.g. ``2.3.19.1``."""
    binary = binary or dovecot_binary()
    if binary is None:
        raise DovecotError("dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
    ).stdout
    return out.split()[0] if out.split() else ""


_HANDED_OUT: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it), never one this
    process was given before.

    The socket is closed before the port is used, so two calls in a row can get the same port
    from the kernel (about one pair in 14,000 on Linux); two listeners of one configuration
    would then collide. Remembering what was handed out rules that out within the process."""
    for _attempt in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free port left that this process was not given before")


def ensure_mail_user(name: str = MAIL_USER) -> tuple[int, int]:
    """Create the system user that owns all mail if it is missing; return its (uid, gid).

    Dovecot refuses to run mail processes as root, so every Maildir belongs to this user.
    """
    import pwd  # Unix only; imported here so the module still imports elsewhere

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )
        # exit 9: another process created it at the same moment, which is just as good
        if result.returncode not in (0, 9):
            raise DovecotError(f"cannot create system user {name!r}: {result.stderr.strip()}")
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from / down to ``path`` has o+x.

    The auth process (user dovecot) and the mail processes (user vmail) must reach files under the
    data directory; they are neither owner nor group of a root-made temp dir.
    """
    for directory in [path, *path.parents]:
        try:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
        except FileNotFoundError:
            continue  # created later by us with 0755
    return True


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone.

    Orphaned daemons may be reaped late by PID 1, so ``kill(pid, 0)`` keeps succeeding for a dead
    process that has become a zombie; /proc tells the truth.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # the command name is in parentheses and may itself contain spaces or ')'
    state = data[data.rfind(b")") + 2 : data.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (the master's service processes)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry))
    return children


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 section 5.1.3), as Dovecot names Maildir folders on disk."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _header_date(raw: bytes) -> float | None:
    """The message's Date: header as a timestamp, or None; used for INTERNALDATE in bulk loads."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = re.search(rb"(?im)^date:[ \t]*(.+(?:\r?\n[ \t].*)*)", head)
    if match is None:
        return None
    try:
        value = match.group(1).decode("ascii", "replace").replace("\r\n", " ").replace("\n", " ")
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class DovecotServer:
    """One Dovecot 2.3 instance on loopback with its own config, users, mail and sockets.

    ``imap_port`` serves plain IMAP and offers STARTTLS (plaintext LOGIN is allowed there, so tests
    can exercise both); ``imaps_port`` is implicit TLS. ``lmtp_socket`` accepts local delivery.
    As a context manager (``with DovecotServer(...) as dovecot:``) it starts and stops.

    The data directory holds everything. When Dovecot's unprivileged users cannot traverse it (a
    pytest temp dir is 0700) or its path is too long for unix sockets, the data lives in a fresh
    0755 directory under the system temp dir, and ``data_dir/data`` is a symlink to it;
    :meth:`cleanup` removes that directory.
    """

    def __init__(
        self,
        data_dir: Path,
        users: Mapping[str, str],
        cert_pem: Path,
        key_pem: Path,
        *,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        host: str = LOOPBACK,
        hostname: str = "imap.upstream.test",
        mail_user: str = MAIL_USER,
        extra_config: str = "",
    ) -> None:
        for name, password in users.items():
            # the passwd-file format is colon-separated lines; a ':' or newline would corrupt it
            if not name or any(c in name for c in ":\r\n/@") or any(c in password for c in ":\r\n"):
                raise ValueError(f"user name or password not usable in a passwd-file: {name!r}")
        self.data_dir = Path(data_dir).absolute()
        self.users: dict[str, str] = dict(users)
        self.cert_pem = Path(cert_pem)
        self.key_pem = Path(key_pem)
        self.host = host
        self.hostname = hostname
        self.mail_user = mail_user
        # appended verbatim after the generated settings (later settings win), e.g. to make
        # Dovecot advertise fewer capabilities: "imap_capability = IMAP4rev1 IDLE"
        self.extra_config = extra_config
        self._fixed_ports = imap_port is not None or imaps_port is not None
        self.imap_port: int = imap_port or 0
        self.imaps_port: int = imaps_port or 0
        self._binary = dovecot_binary()
        self._external_root: Path | None = None
        # decided at start(), once the data directory exists
        self.root: Path = self.data_dir
        self._master_pid: int | None = None
        self._uid = self._gid = -1
        self._log_offsets: dict[Path, int] = {}

    # -- layout -----------------------------------------------------------------------------

    def _choose_root(self) -> Path:
        """Decide where the instance's files really live (see the class docstring)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        link = self.data_dir / "data"
        if link.is_symlink():
            # reuse a previous run's external directory while it still exists (demo restarts)
            target = Path(os.readlink(link))
            if target.is_dir() and _traversable_by_others(target):
                self._external_root = target
                return target
            link.unlink()
        short_enough = len(str(self.data_dir / "run")) <= _MAX_BASE_DIR_LEN
        if short_enough and _traversable_by_others(self.data_dir):
            return self.data_dir
        external = Path(tempfile.mkdtemp(prefix="caliproxy-dovecot-"))
        external.chmod(0o755)
        link.symlink_to(external)
        self._external_root = external
        return external

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def lmtp_socket(self) -> Path:
        """Unix socket for LMTP delivery (mode 0666)."""
        return self.base_dir / "lmtp"

    @property
    def auth_socket(self) -> Path:
        """Dovecot SASL socket (mode 0666), e.g. for Postfix ``smtpd_sasl_path``."""
        return self.base_dir / "auth-postfix"

    @property
    def log_path(self) -> Path:
        """Dovecot's own log (logins, deliveries, errors)."""
        return self.root / "dovecot.log"

    @property
    def stdio_log_path(self) -> Path:
        """The daemon's stdout/stderr (startup errors before logging is set up land here)."""
        return self.root / "dovecot.stdio.log"

    @property
    def doveadm_path(self) -> Path:
        """A wrapper script running ``doveadm`` against this instance (for shells and demos)."""
        return self.root / "bin" / "doveadm"

    @property
    def instance_name(self) -> str:
        return f"caliproxy-{self.imap_port}"

    def maildir(self, user: str, mailbox: str = "INBOX") -> Path:
        """The Maildir++ directory of ``mailbox`` (hierarchy separator '/') for ``user``."""
        base = self.root / "mail" / user / "Maildir"
        if mailbox.upper() == "INBOX":
            return base
        # on disk, Dovecot keeps names in modified UTF-7 and levels joined by '.'
        return base / ("." + _mutf7(mailbox).replace("/", "."))

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._master_pid is not None and _pid_alive(self._master_pid)

    def start(self) -> Self:
        """Write the config and start Dovecot; return once it greets on the IMAP port."""
        if self.running:
            return self
        self._check_environment()
        self._uid, self._gid = ensure_mail_user(self.mail_user)
        self._prepare_dirs()
        if not (self.imap_port and self.imaps_port):
            # picked once and then kept, so a restarted instance keeps its address
            self.imap_port, self.imaps_port = self._pick_ports()
        attempts = 1 if self._fixed_ports else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except DovecotError as exc:
                # another process may have taken a port between picking and binding it
                if attempt + 1 < attempts and "in use" in str(exc):
                    self.imap_port, self.imaps_port = self._pick_ports()
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the master and wait until every Dovecot process of this instance is gone.

        A new start before the old master has exited fails ("Dovecot is already running"), so
        stop() returns only once all of them have exited (zombies count as exited: PID 1 may reap
        orphans late). Left alone, the master waits for its children, sends the stragglers
        SIGQUIT and sleeps 1 s before it exits; signalling the children ourselves (and ending the
        master once they are gone) makes a stop take 0.1-0.3 s instead of 1.1 s, which adds up
        over a test suite.
        """
        pid = self._master_pid or self._read_pid()
        self._master_pid = None
        if pid is None or not _pid_alive(pid):
            return
        _signal_all([pid], signal.SIGTERM)
        time.sleep(0.05)  # let the master close its listeners first, so nothing new is accepted
        signalled: set[int] = set()
        orphaned_master_since: float | None = None
        deadline = time.monotonic() + _STOP_TIMEOUT
        while True:
            # the master may still fork (process_min_avail) while it shuts down: look again
            children = set(_children_of(pid)) if _pid_alive(pid) else set()
            _signal_all(sorted(children - signalled), signal.SIGTERM)
            signalled |= children
            remaining = [p for p in (pid, *signalled) if _pid_alive(p)]
            if not remaining:
                return
            if remaining == [pid]:
                if orphaned_master_since is None:
                    orphaned_master_since = time.monotonic()
                elif time.monotonic() - orphaned_master_since > 0.2:
                    # Every child is gone, yet the master lingers: when one of them had not been
                    # reaped yet at its final check, it sleeps a full, uninterruptible second
                    # "to let SIGQUIT be processed" (services_monitor_wait_and_kill). It holds
                    # no mail state, and start() clears base_dir, so end that sleep here.
                    _signal_all([pid], signal.SIGKILL)
            if time.monotonic() > deadline:
                _signal_all(remaining, signal.SIGKILL)
                deadline = time.monotonic() + 2.0  # SIGKILL cannot be ignored; just let it land
            time.sleep(0.01)

    def cleanup(self, *, keep_logs: bool = False) -> None:
        """Stop, then delete every file this instance wrote (its mail included).

        With ``keep_logs``, Dovecot's log files stay behind in ``data_dir`` (tests keep them next
        to their other temp files for post-mortems).
        """
        self.stop()
        logs = {}
        if keep_logs:
            for path in (self.log_path, self.stdio_log_path):
                if path.exists():
                    logs[path.name] = path.read_bytes()
        if self._external_root is not None:
            shutil.rmtree(self._external_root, ignore_errors=True)
            link = self.data_dir / "data"
            if link.is_symlink():
                link.unlink()
            self._external_root = None
        elif self.data_dir.exists():
            # our files only: the directory itself belongs to the caller
            for name in ("dovecot.conf", "users", "run", "state", "bin", "tls", "mail",
                         self.log_path.name, self.stdio_log_path.name):
                path = self.data_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        self.root = self.data_dir
        for name, data in logs.items():
            (self.data_dir / name).write_bytes(data)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DovecotServer {self.host} imap={self.imap_port} imaps={self.imaps_port} {state}>"

    # -- putting mail in ------------------------------------------------------------------------

    def deliver(self, user: str, raw: bytes, mailbox: str = "INBOX", *, sender: str = "") -> None:
        """Deliver one message as a real arrival (IDLE clients get EXISTS).

        INBOX goes through LMTP, exactly like mail from an MTA, so Dovecot prepends its own
        ``Return-Path: <sender>`` and ``Received: ... with LMTP`` lines (the null sender by
        default). Another mailbox goes through ``doveadm save``, which stores the bytes as they
        are (LMTP can only target INBOX without extra plugins). The mailbox is created when
        missing.
        """
        self._require_running()
        if mailbox.upper() == "INBOX":
            try:
                with smtplib.LMTP(str(self.lmtp_socket)) as lmtp:
                    refused = lmtp.sendmail(sender, [user], raw)
            except smtplib.SMTPException as exc:
                raise DovecotError(f"LMTP delivery to {user} failed: {exc}") from exc
            if refused:
                raise DovecotError(f"LMTP refused {user}: {refused}")
            return
        self._ensure_mailbox(user, mailbox)
        self.doveadm("save", "-u", user, "-m", mailbox, input=raw)

    def bulk_load(
        self,
        user: str,
        messages: Sequence[bytes],
        mailbox: str = "INBOX",
        *,
        flags: str = "",
    ) -> int:
        """Write ``messages`` straight into the Maildir, then let Dovecot index them once.

        The fast path for thousands of messages (10k in ~3 s). They get UIDs in list order;
        INTERNALDATE is each message's Date: header (now when absent). ``flags`` are Maildir flag
        letters ("S" seen, "F" flagged, "R" answered, ...). Unlike :meth:`deliver`, a client already
        in IDLE may only notice them at its next command. Returns the mailbox's message count.
        """
        self._require_running()
        if mailbox.upper() != "INBOX":
            self._ensure_mailbox(user, mailbox)
        folder = self.maildir(user, mailbox)
        user_root = self.root / "mail" / user
        subdirs = (folder / "cur", folder / "new", folder / "tmp")
        for sub in (user_root, user_root / "Maildir", folder, *subdirs):
            if not sub.exists():
                sub.mkdir(mode=0o700)
                os.chown(sub, self._uid, self._gid)
        cur = folder / "cur"
        hostname = "caliproxy"
        now = time.time()
        # Dovecot gives new files their UIDs in the order of the names' seconds and microseconds
        # (M..., zero-padded so text order agrees), so message i gets the i-th new UID;
        # R<random> keeps names unique across calls within one second.
        stem = int(now)
        unique = f"P{os.getpid()}R{secrets.token_hex(4)}"
        suffix_flags = "".join(sorted(set(flags)))
        for index, raw in enumerate(messages):
            seconds, micros = divmod(index, 1_000_000)
            virtual_size = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
            name = (f"{stem + seconds}.M{micros:06d}{unique}Q{index}.{hostname}"
                    f",S={len(raw)},W={virtual_size}:2,{suffix_flags}")
            path = cur / name
            with open(path, "wb") as fh:
                fh.write(raw)
            os.chown(path, self._uid, self._gid)
            stamp = _header_date(raw) or now
            os.utime(path, (stamp, stamp))
        out = self.doveadm("mailbox", "status", "-u", user, "messages", mailbox)
        match = re.search(r"messages=(\d+)", out)
        return int(match.group(1)) if match else -1

    def doveadm(self, *args: str, input: bytes | None = None) -> str:
        """Run ``doveadm -c <this config> ARGS``; return stdout, raise DovecotError on failure."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        result = subprocess.run(
            [doveadm, "-c", str(self.config_path), *args],
            input=input if input is not None else b"",
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    # -- internals --------------------------------------------------------------------------

    def _check_environment(self) -> None:
        if self._binary is None:
            raise DovecotError(
                "dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        version = dovecot_version(self._binary)
        if not version.startswith("2.3."):
            raise DovecotError(
                f"Dovecot {version} found, but this harness generates Dovecot 2.3 "
                "configuration only; 2.4 changed the syntax (dovecot_config_version, "
                "ssl_server_cert_file, named passdb/userdb blocks). Install Dovecot 2.3 "
                "(Debian 12) or port the config."
            )
        if os.geteuid() != 0:
            raise DovecotError("Dovecot must be started as root (it then drops to the mail user)")

    def _pick_ports(self) -> tuple[int, int]:
        imap = free_port(self.host)
        imaps = free_port(self.host)
        while imaps == imap:
            imaps = free_port(self.host)
        return imap, imaps

    def _prepare_dirs(self) -> None:
        self.root = self._choose_root()
        self.root.chmod(0o755)
        (self.root / "state").mkdir(exist_ok=True)
        (self.root / "bin").mkdir(exist_ok=True)
        tls = self.root / "tls"
        tls.mkdir(exist_ok=True)
        # the key is read by Dovecot's config process as root, before it drops privileges
        tls.chmod(0o700)
        shutil.copyfile(self.cert_pem, tls / "cert.pem")
        shutil.copyfile(self.key_pem, tls / "key.pem")
        (tls / "key.pem").chmod(0o600)
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        mail.chmod(0o755)
        os.chown(mail, self._uid, self._gid)
        users_file = self.root / "users"
        users_file.write_text(
            "".join(f"{name}:{{PLAIN}}{pw}::::::\n" for name, pw in self.users.items()))
        users_file.chmod(0o644)  # read by the auth process, which runs as user dovecot

    def _write_config(self) -> None:
        config = _render_config(self)
        if self.extra_config:
            config += f"\n# extra settings given to DovecotServer\n{self.extra_config.strip()}\n"
        self.config_path.write_text(config)
        wrapper = self.doveadm_path
        wrapper.write_text(
            "#!/bin/sh\n# doveadm for this caliproxy test instance\n"
            f'exec doveadm -c "{self.config_path}" "$@"\n'
        )
        wrapper.chmod(0o755)

    def _start_once(self) -> None:
        stale = self._read_pid()
        # (a stale master.pid may name a recycled PID: only a Dovecot with our config is ours)
        if stale is not None and str(self.config_path).encode() in _cmdline(stale):
            # left behind by a process that died without stop(): same data dir, so it is ours
            self._master_pid = stale
            self.stop()
        self._write_config()
        # a leftover base_dir (e.g. after SIGKILL) holds stale sockets that make the first auth hang
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self._log_offsets = {path: _size(path) for path in (self.stdio_log_path, self.log_path)}
        # The master keeps fd 0-2 for life: a caller reading our output through a pipe would hang
        # forever, so the daemon talks only to a file.
        with open(self.stdio_log_path, "ab") as out:
            result = subprocess.run(
                [str(self._binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False,
            )
        if result.returncode != 0:
            raise DovecotError(f"dovecot exited with {result.returncode}: {self._log_tail()}")
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            pid = self._read_pid()
            if pid is not None and self._greets():
                self._master_pid = pid
                return
            if pid is not None and not _pid_alive(pid):
                raise DovecotError(f"dovecot died during startup: {self._log_tail()}")
            if time.monotonic() > deadline:
                self._master_pid = pid
                self.stop()
                raise DovecotError(
                    f"dovecot did not greet within {_START_TIMEOUT:.0f} s: {self._log_tail()}")
            time.sleep(0.02)

    def _greets(self) -> bool:
        """True once both IMAP listeners answer with a greeting."""
        try:
            with socket.create_connection((self.host, self.imap_port), timeout=2) as sock:
                if not sock.recv(64).startswith(b"* OK"):
                    return False
            # implicit TLS: the handshake alone proves the key and certificate were loaded
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with (
                socket.create_connection((self.host, self.imaps_port), timeout=2) as raw_sock,
                context.wrap_socket(raw_sock) as tls_sock,
            ):
                return tls_sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def _read_pid(self) -> int | None:
        try:
            return int((self.base_dir / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _log_tail(self, lines: int = 15) -> str:
        """The last log lines written since the current start, for error messages."""
        text = ""
        for path in (self.stdio_log_path, self.log_path):
            try:
                with open(path, "rb") as fh:
                    fh.seek(self._log_offsets.get(path, 0))
                    text += fh.read().decode(errors="replace")
            except FileNotFoundError:
                pass
        return "\n".join(text.strip().splitlines()[-lines:]) or "(no log output)"

    def _require_running(self) -> None:
        if not self.running:
            raise DovecotError("Dovecot is not running; call start() first")

    def _ensure_mailbox(self, user: str, mailbox: str) -> None:
        if self.maildir(user, mailbox).is_dir():
            return
        try:
            self.doveadm("mailbox", "create", "-u", user, mailbox)
        except DovecotError as exc:
            if "exists" not in str(exc).lower():
                raise


def _render_config(server: DovecotServer) -> str:
    """Dovecot 2.3 configuration for ``server`` (see the comments inside for the reasons)."""
    root = server.root
    return f"""\
# caliproxy upstream: Dovecot 2.3 on loopback, self-contained (dovecot -c this-file)
# generated by caliproxy.demo.dovecot; rewritten at every start
instance_name = {server.instance_name}
base_dir = {server.base_dir}
state_dir = {root}/state
protocols = imap lmtp
listen = {server.host}
# fixed, so LMTP's Received: lines do not depend on the machine's name
hostname = {server.hostname}
log_path = {server.log_path}
auth_verbose = yes
verbose_proctitle = yes
default_internal_user = dovecot
default_login_user = dovenull
# useradd --system may hand out uids below Dovecot's default limit of 500
first_valid_uid = 1

ssl = yes
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem
ssl_min_protocol = TLSv1.2
# tests may LOGIN on the plain port without STARTTLS
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  # username_format=%n: LMTP recipients alice@example.test map to user alice
  driver = passwd-file
  args = username_format=%n {root}/users
  default_fields = uid={server.mail_user} gid={server.mail_user} home={root}/mail/%n
}}
mail_location = maildir:~/Maildir
# test data only: no fsync makes APPEND, LMTP and doveadm save much faster
mail_fsync = never

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Archive {{
    special_use = \\Archive
    auto = subscribe
  }}
}}

protocol imap {{
  # the default of 10 per user+IP would break proxy load tests, which all come from 127.0.0.1
  mail_max_userip_connections = 10000
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}

default_process_limit = 1000
default_client_limit = 10000
service imap-login {{
  inet_listener imap {{
    address = {server.host}
    port = {server.imap_port}
  }}
  inet_listener imaps {{
    address = {server.host}
    port = {server.imaps_port}
    ssl = yes
  }}
  # high-performance login mode: TLS sessions stay in imap-login for their whole life; one
  # process per connection (the default) would cap concurrent TLS sessions at process_limit
  service_count = 0
  process_min_avail = 2
  client_limit = 5000
}}
service imap {{
  process_limit = 5000
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service auth {{
  # an MTA (Postfix smtpd_sasl_type = dovecot) can authenticate SMTP AUTH against the same users
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
service anvil {{
  # no auth penalty: otherwise one failed login from 127.0.0.1 delays the next ones by 2..15 s,
  # successful ones included (login_trusted_networks does not lift it in 2.3)
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

