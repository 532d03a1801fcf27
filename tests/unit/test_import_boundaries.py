"""The rings stay clean: privacy/, imap/ and smtp/ never import IO, config or metrics libraries.

Three rings (README, Architecture): pure policy inside sans-IO protocol engines inside a thin IO shell. This walks the source
of each inner ring with ``ast`` so a forbidden import anywhere (even inside a function) fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "caliproxy"
FORBIDDEN = {"twisted", "asyncio", "OpenSSL", "yaml", "prometheus_client", "socket", "ssl", "aiosmtpd"}
# What each ring may import from the project itself.
ALLOWED_INTERNAL = {
    "privacy": {"caliproxy.errors", "caliproxy.privacy"},
    "imap": {"caliproxy.errors", "caliproxy.imap", "caliproxy.privacy"},
    "smtp": {"caliproxy.errors", "caliproxy.smtp", "caliproxy.privacy"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("ring", sorted(ALLOWED_INTERNAL))
def test_ring_imports_nothing_outward(ring: str) -> None:
    problems = []
    for path in sorted((PACKAGE / ring).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
            if top == "caliproxy" and not any(
                module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED_INTERNAL[ring]
            ):
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module} (outer ring)")
    assert not problems, "\n".join(problems)


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert not missing, f"modules without a docstring: {missing}"
