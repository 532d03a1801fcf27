"""A real Postfix submission server on loopback, authenticating against a :class:`DovecotServer`.

Owns: generating a private Postfix configuration directory (``main.cf``, ``master.cf``) with its own
queue and data directories, starting ``postfix -c DIR start``, waiting until every port greets,
stopping it for good, and reading what it delivered outside Dovecot (the catch-all Maildir).

Mail for ``<user>@example.test`` goes to the Dovecot instance over LMTP (so it lands in that user's
IMAP INBOX); any other recipient is accepted and stored in one catch-all Maildir, ``sink_maildir``.
SMTP AUTH is checked by Dovecot's auth socket, so the users are Dovecot's users.

Three ports, as a real provider has them: ``smtp_port`` (relay for 127/8, STARTTLS and AUTH
optional), ``submission_port`` (STARTTLS and AUTH required) and ``smtps_port`` (implicit TLS, AUTH
required). ``recipient_access`` makes chosen recipients fail at RCPT time on the two submission
ports (``{"nobody@example.test": "550 5.1.1 no such user"}``), for per-recipient reply tests.

It must not import the proxy rings (net/, imap/, smtp/, privacy/) nor any test-only package
(trustme, pytest). It needs root: Postfix's master runs as root and its delivery agents take the
mail user's uid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from caliproxy.demo.dovecot import (
    LOOPBACK,
    DovecotServer,
    _pid_alive,
    _traversable_by_others,
    ensure_mail_user,
    free_port,
)
from caliproxy.errors import CaliproxyError

_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0

#: The largest message Postfix accepts (its ``message_size_limit``), advertised in EHLO SIZE.
DEFAULT_MESSAGE_SIZE_LIMIT = 50 * 1024 * 1024

# An access(5) action: a 4xx/5xx code with an optional enhanced code and text, nothing that could
# break out of the inline: table or of main.cf.
_ACCESS_ACTION = re.compile(r"^[45][0-9][0-9](?: [ -~]*)?$")
_ACCESS_KEY = re.compile(r"^[A-Za-z0-9._%+@-]+$")


class PostfixError(CaliproxyError):
    """Postfix is missing, or did not start, stop or deliver."""


def postfix_binary() -> str | None:
    """Path of the ``postfix`` command, or None when Postfix is not installed."""
    return shutil.which("postfix") or next(
        (p for p in ("/usr/sbin/postfix", "/usr/local/sbin/postfix") if os.access(p, os.X_OK)),
        None,
    )


class PostfixServer:
    """One Postfix instance on loopback in front of ``dovecot`` (which must be started first).

    Usable as a context manager. The data directory holds the configuration, queue, logs and the
    catch-all Maildir; when Postfix's unprivileged users cannot traverse it (a pytest temp dir is
    0700), everything lives in a fresh 0755 directory under the system temp dir and
    ``data_dir/data`` is a symlink to it, as for :class:`DovecotServer`.
    """

    def __init__(
        self,
        data_dir: Path,
        dovecot: DovecotServer,
        cert_pem: Path,
        key_pem: Path,
        *,
        smtp_port: int | None = None,
        submission_port: int | None = None,
        smtps_port: int | None = None,
        recipient_access: Mapping[str, str] | None = None,
        message_size_limit: int = DEFAULT_MESSAGE_SIZE_LIMIT,
        host: str = LOOPBACK,
        hostname: str = "smtp.upstream.test",
        mail_user: str = "vmail",
    ) -> None:
        access = dict(recipient_access or {})
        for key, action in access.items():
            if not _ACCESS_KEY.match(key) or not _ACCESS_ACTION.match(action) or "}" in action:
                raise ValueError(f"recipient_access entry not usable: {key!r}: {action!r}")
        self.data_dir = Path(data_dir).absolute()
        self.dovecot = dovecot
        self.cert_pem = Path(cert_pem)
        self.key_pem = Path(key_pem)
        self.recipient_access = access
        self.message_size_limit = message_size_limit
        self.host = host
        self.hostname = hostname
        self.mail_user = mail_user
        self.smtp_port = smtp_port or 0
        self.submission_port = submission_port or 0
        self.smtps_port = smtps_port or 0
        self._binary = postfix_binary()
        self._external_root: Path | None = None
        self.root: Path = self.data_dir
        self._uid = self._gid = -1

    # -- layout -----------------------------------------------------------------------------

    def _choose_root(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        link = self.data_dir / "data"
        if link.is_symlink():
            target = Path(os.readlink(link))
            if target.is_dir() and _traversable_by_others(target):
                self._external_root = target
                return target
            link.unlink()
        if _traversable_by_others(self.data_dir):
            return self.data_dir
        external = Path(tempfile.mkdtemp(prefix="caliproxy-postfix-"))
        external.chmod(0o755)
        link.symlink_to(external)
        self._external_root = external
        return external

    @property
    def config_dir(self) -> Path:
        """The directory given to ``postfix -c``: main.cf and master.cf only."""
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        # outside config_dir: `postfix check` would otherwise recurse into it and complain
        return self.root / "spool"

    @property
    def log_path(self) -> Path:
        """Postfix's own log (maillog_file): connections, deliveries, rejections."""
        return self.root / "maillog"

    @property
    def stdio_log_path(self) -> Path:
        return self.root / "postfix.stdio.log"

    @property
    def sink_maildir(self) -> Path:
        """The Maildir that receives every recipient outside example.test."""
        return self.root / "smtp-sink"

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        pid = self._read_pid()
        return pid is not None and _pid_alive(pid)

    def start(self) -> Self:
        """Write the configuration and start Postfix; return once every port greets."""
        if self.running:
            return self
        self._check_environment()
        self._uid, self._gid = ensure_mail_user(self.mail_user)
        self._prepare_dirs()
        if not (self.smtp_port and self.submission_port and self.smtps_port):
            ports: set[int] = set()
            while len(ports) < 3:
                ports.add(free_port(self.host))
            self.smtp_port, self.submission_port, self.smtps_port = sorted(ports)
        self._write_config()
        with open(self.stdio_log_path, "ab") as out:
            result = subprocess.run(
                [str(self._binary), "-c", str(self.config_dir), "start"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False,
            )
        if result.returncode != 0:
            raise PostfixError(f"postfix start exited with {result.returncode}: {self._log_tail()}")
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._greets():
            if time.monotonic() > deadline:
                self.stop()
                raise PostfixError(f"postfix did not greet within {_START_TIMEOUT:.0f} s: "
                                   f"{self._log_tail()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the master and wait until it is gone (a zombie counts as gone)."""
        pid = self._read_pid()
        if pid is None or not _pid_alive(pid):
            return
        # `postfix stop` would do the same through postfix-script; signalling the master directly
        # skips a shell round trip. SIGTERM: the master terminates its children and exits.
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 2.0
            time.sleep(0.01)

    def cleanup(self, *, keep_logs: bool = False) -> None:
        """Stop, then delete every file this instance wrote (queue and mail included)."""
        self.stop()
        logs = {}
        if keep_logs:
            for path in (self.log_path, self.stdio_log_path):
                if path.exists():
                    logs["postfix-" + path.name] = path.read_bytes()
        if self._external_root is not None:
            shutil.rmtree(self._external_root, ignore_errors=True)
            link = self.data_dir / "data"
            if link.is_symlink():
                link.unlink()
            self._external_root = None
        else:
            for name in ("etc", "spool", "pdata", "tls", "smtp-sink", self.log_path.name,
                         self.stdio_log_path.name):
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
        return (f"<PostfixServer {self.host} smtp={self.smtp_port} submission={self.submission_port} "
                f"smtps={self.smtps_port} {state}>")

    # -- reading what was delivered ---------------------------------------------------------

    def sink_messages(self) -> list[bytes]:
        """Every message delivered to the catch-all Maildir, oldest first (as stored: LF lines)."""
        found = []
        for sub in ("new", "cur"):
            directory = self.sink_maildir / sub
            if directory.is_dir():
                found += [p for p in directory.iterdir() if p.is_file()]
        found.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return [p.read_bytes() for p in found]

    def queue_is_empty(self) -> bool:
        """True when no message waits in the queue (everything was delivered or bounced)."""
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            directory = self.queue_dir / sub
            if directory.is_dir() and any(p.is_file() for p in directory.rglob("*")):
                return False
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- internals --------------------------------------------------------------------------

    def _check_environment(self) -> None:
        if self._binary is None:
            raise PostfixError("postfix is not installed (apt-get install postfix; see .ci/install-deps)")
        if os.geteuid() != 0:
            raise PostfixError("Postfix must be started as root (its master runs as root)")
        if not self.dovecot.running:
            raise PostfixError("start the Dovecot instance first: Postfix authenticates and "
                               "delivers through its sockets")

    def _prepare_dirs(self) -> None:
        import grp
        import pwd

        self.root = self._choose_root()
        self.root.chmod(0o755)
        self.config_dir.mkdir(exist_ok=True)
        # the queue tree is kept between starts: building it makes the first start ~2 s slower
        self.queue_dir.mkdir(exist_ok=True)
        self.queue_dir.chmod(0o755)
        data = self.root / "pdata"
        data.mkdir(exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(data, postfix_user.pw_uid, grp.getgrnam("postfix").gr_gid)
        tls = self.root / "tls"
        tls.mkdir(exist_ok=True)
        tls.chmod(0o700)  # smtpd reads the key as root before dropping privileges
        shutil.copyfile(self.cert_pem, tls / "cert.pem")
        shutil.copyfile(self.key_pem, tls / "key.pem")
        (tls / "key.pem").chmod(0o600)
        sink = self.sink_maildir
        sink.mkdir(exist_ok=True)
        sink.chmod(0o700)
        os.chown(sink, self._uid, self._gid)
        for path in (self.log_path, self.stdio_log_path):
            path.touch()

    def _write_config(self) -> None:
        main = _render_main_cf(self)
        main_cf = self.config_dir / "main.cf"
        # Postfix rebuilds its queue tree (~2 s) when main.cf's mtime changed: rewrite it only
        # when its content did.
        if not main_cf.exists() or main_cf.read_text() != main:
            main_cf.write_text(main)
        master_cf = self.config_dir / "master.cf"
        master = _render_master_cf(self)
        if not master_cf.exists() or master_cf.read_text() != master:
            master_cf.write_text(master)

    def _greets(self) -> bool:
        try:
            for port in (self.smtp_port, self.submission_port):
                with socket.create_connection((self.host, port), timeout=2) as sock:
                    if not sock.recv(64).startswith(b"220"):
                        return False
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with (
                socket.create_connection((self.host, self.smtps_port), timeout=2) as raw_sock,
                context.wrap_socket(raw_sock) as tls_sock,
            ):
                return tls_sock.recv(64).startswith(b"220")
        except OSError:
            return False

    def _read_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _log_tail(self, lines: int = 15) -> str:
        text = ""
        for path in (self.stdio_log_path, self.log_path):
            try:
                text += path.read_text(errors="replace")
            except FileNotFoundError:
                pass
        return "\n".join(text.strip().splitlines()[-lines:]) or "(no log output)"


def _inline_table(entries: Mapping[str, str]) -> str:
    # inline:{ { key = value }, ... }: the inner braces let a value contain spaces and commas
    return "inline:{ " + ", ".join(f"{{ {k} = {v} }}" for k, v in sorted(entries.items())) + " }"


def _render_main_cf(server: PostfixServer) -> str:
    root = server.root
    access = (f"check_recipient_access {_inline_table(server.recipient_access)}, "
              if server.recipient_access else "")
    lmtp = f"lmtp:unix:{server.dovecot.lmtp_socket}"
    return f"""\
# caliproxy upstream: Postfix on loopback (postfix -c {server.config_dir} start)
# generated by caliproxy.demo.postfix; rewritten only when its content changes
compatibility_level = 3.6
queue_directory = {server.queue_dir}
data_directory = {root}/pdata
mail_owner = postfix
setgid_group = postdrop
# the log file must lie under one of maillog_file_prefixes
maillog_file_prefixes = {root}
maillog_file = {server.log_path}
myhostname = {server.hostname}
mydomain = upstream.test
myorigin = $myhostname
mydestination =
inet_interfaces = {server.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
biff = no
# no network here: no DNS lookups at all
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# do not add Date:/Message-ID:/... to what the proxy relays (byte-for-byte checks)
local_header_rewrite_clients =
message_size_limit = {server.message_size_limit}
# virtual(8) refuses to start when virtual_mailbox_limit < message_size_limit
virtual_mailbox_limit = 0
mailbox_size_limit = 0
in_flow_delay = 0
default_process_limit = 500

# every recipient is accepted; <user>@example.test -> Dovecot LMTP, anything else -> catch-all Maildir
virtual_mailbox_domains = static:all
virtual_mailbox_base = {root}
virtual_mailbox_maps = static:smtp-sink/
virtual_uid_maps = static:{server._uid}
virtual_gid_maps = static:{server._gid}
virtual_minimum_uid = 1
transport_maps = inline:{{ example.test={lmtp} }}

smtpd_tls_cert_file = {root}/tls/cert.pem
smtpd_tls_key_file = {root}/tls/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
# an absolute path works because smtpd is not chrooted (master.cf chroot column n)
smtpd_sasl_path = {server.dovecot.auth_socket}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# the submission ports: AUTH required, chosen recipients refused at RCPT time
submission_recipient_restrictions = {access}permit_sasl_authenticated, reject
"""


def _render_master_cf(server: PostfixServer) -> str:
    host = server.host
    return f"""\
# generated by caliproxy.demo.postfix
# relay for 127/8, STARTTLS and AUTH offered but optional
{host}:{server.smtp_port} inet n - n - - smtpd
# submission: STARTTLS + AUTH required
{host}:{server.submission_port} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_recipient_restrictions=$submission_recipient_restrictions
# implicit TLS, AUTH required
{host}:{server.smtps_port} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_recipient_restrictions=$submission_recipient_restrictions
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
