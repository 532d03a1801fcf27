"""Factories for the privacy engine's tests: messages, policies, and real PGP/S/MIME output.

The PGP/MIME and S/MIME messages are produced by the real gpg and openssl tools in a temporary
directory, once per test session, so the corpus tests what those agents actually emit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.policy import Policy

# The user's own chain in most of the corpus: Postfix on mx.example.org (192.0.2.10) delivering
# over LMTP to Dovecot on imap.example.org.
BASE_POLICY: dict[str, Any] = {
    "trusted_relays": {
        "hosts": ["mx.example.org", "imap.example.org"],
        "networks": ["192.0.2.0/28"],
    },
    "authserv_ids": ["mx.example.org"],
    "known_correspondents": ["*@example.org", "alice@sender.example"],
}


def build_message(*fields: str, body: str = "Hello.\n") -> bytes:
    """A message from header fields written with "\\n" (folded lines start with a tab), CRLF-ended."""
    head = "".join(field.strip("\n") + "\n" for field in fields)
    return (head + "\n" + body).replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


@pytest.fixture
def make_policy() -> Callable[..., Policy]:
    """Policy factory: the base example.org policy with top-level keys replaced."""

    def make(**overrides: Any) -> Policy:
        data: Mapping[str, Any] = {**BASE_POLICY, **overrides}
        return policy_from_mapping(data)

    return make


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, data: bytes | None = None
) -> bytes:
    return subprocess.run(
        args, cwd=cwd, env=env, input=data, check=True, capture_output=True, timeout=60
    ).stdout


@pytest.fixture(scope="session")
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A throw-away GnuPG home with one ed25519/cv25519 key for alice@sender.example."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    _run(
        "gpg",
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--quick-gen-key",
        "Alice <alice@sender.example>",
        "future-default",
        "default",
        "never",
        cwd=home,
        env=env,
    )
    yield home, env
    # gpg starts an agent for this home; stop exactly that one.
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)


@pytest.fixture(scope="session")
def pgp_payloads(gpg_home: tuple[Path, dict[str, str]]) -> dict[str, bytes]:
    """Armoured gpg output: an encrypted message, a detached signature, a clearsigned text."""
    home, env = gpg_home
    plain = b"Content-Type: text/plain\r\n\r\nThe test results are attached.\r\n"
    common = [
        "gpg",
        "--batch",
        "--yes",
        "--armor",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]
    return {
        "signed_part": plain,
        "encrypted": _run(
            *common,
            "--trust-model",
            "always",
            "--encrypt",
            "-r",
            "alice@sender.example",
            cwd=home,
            env=env,
            data=plain,
        ),
        "signature": _run(*common, "--detach-sign", cwd=home, env=env, data=plain),
        "clearsigned": _run(*common, "--clearsign", cwd=home, env=env, data=b"Meet at noon.\n"),
        "inline_encrypted": _run(
            *common,
            "--trust-model",
            "always",
            "--encrypt",
            "-r",
            "alice@sender.example",
            cwd=home,
            env=env,
            data=b"Meet at noon.\n",
        ),
    }


@pytest.fixture(scope="session")
def smime_messages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Whole S/MIME messages as ``openssl smime`` writes them: enveloped and signed."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    work = tmp_path_factory.mktemp("smime")
    _run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-subj",
        "/CN=Alice/emailAddress=alice@sender.example",
        cwd=work,
    )
    (work / "body.txt").write_bytes(b"Content-Type: text/plain\r\n\r\nQuarterly figures.\r\n")
    headers = ["-from", "alice@sender.example", "-to", "bob@example.org", "-subject", "Figures"]
    return {
        "enveloped": _run(
            "openssl",
            "smime",
            "-encrypt",
            "-aes256",
            "-in",
            "body.txt",
            *headers,
            "cert.pem",
            cwd=work,
        ),
        "signed": _run(
            "openssl",
            "smime",
            "-sign",
            "-in",
            "body.txt",
            "-signer",
            "cert.pem",
            "-inkey",
            "key.pem",
            *headers,
            cwd=work,
        ),
        "opaque_signed": _run(
            "openssl",
            "smime",
            "-sign",
            "-nodetach",
            "-in",
            "body.txt",
            "-signer",
            "cert.pem",
            "-inkey",
            "key.pem",
            *headers,
            cwd=work,
        ),
    }
