"""privacy/ is pure: besides itself and caliproxy.errors it imports only side-effect-free standard
library modules - no IO, no logging, no randomness - and never reads the clock (``now`` is passed)."""

from __future__ import annotations

import ast
from pathlib import Path

RING = Path(__file__).resolve().parents[2] / "caliproxy" / "privacy"
STDLIB_ALLOWED = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "fnmatch",
    "functools",
    "ipaddress",
    "re",
    "types",
    "typing",
}
CLOCK_CALLS = {"now", "utcnow", "today", "fromtimestamp"}


def test_privacy_imports_nothing_impure() -> None:
    problems = []
    for path in sorted(RING.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in CLOCK_CALLS
            ):
                problems.append(f"{path.name}:{node.lineno} reads the clock ({node.func.attr})")
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                internal = module == "caliproxy.errors" or module.startswith("caliproxy.privacy")
                if not internal and top not in STDLIB_ALLOWED:
                    problems.append(f"{path.name}:{node.lineno} imports {module}")
    assert not problems, problems
