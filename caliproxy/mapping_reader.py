"""Reading a parsed YAML section (plain mappings, lists, scalars) with errors that name their place.

Shared by the policy and trust loaders: every failure is a ``ConfigError`` naming the dotted path
(``policy.rules[2].match.sender``) and, when the caller passes a line map, the line. Never reads
files and never imports yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from caliproxy.errors import ConfigError


class MappingReader:
    """Typed access to one YAML tree, failing with dotted paths and line numbers."""

    def __init__(self, lines: Mapping[str, int] | None) -> None:
        self._lines = lines or {}

    def fail(self, path: str, message: str) -> NoReturn:
        line = self._line(path)
        where = f"{path} (line {line})" if line is not None else path
        raise ConfigError(f"{where}: {message}")

    def _line(self, path: str) -> int | None:
        # Fall back to the nearest enclosing key that has a known line.
        while path:
            if path in self._lines:
                return self._lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return None
            path = path[:cut]
        return None

    def mapping(self, value: object, path: str, allowed: tuple[str, ...]) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping, got {kind(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
            if key not in allowed:
                self.fail(f"{path}.{key}", f"unknown key (known: {', '.join(allowed)})")
        return value

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {kind(value)}")
        return value


def kind(value: object) -> str:
    """How a wrong value is named in an error message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
