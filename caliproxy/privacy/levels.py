"""Confidentiality levels: the ordered scale shared by message verdicts and connection clearances.

Pure module (no IO). A message is visible to a connection when its level ranks at or below the
connection's clearance.
"""

from __future__ import annotations

from dataclasses import dataclass

from caliproxy.errors import PolicyError

DEFAULT_LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "secret")


@dataclass(frozen=True)
class LevelScale:
    """An ordered list of level names, lowest first."""

    names: tuple[str, ...] = DEFAULT_LEVELS

    def __post_init__(self) -> None:
        if not self.names:
            raise PolicyError("at least one confidentiality level is required")
        if len(set(self.names)) != len(self.names):
            raise PolicyError(f"duplicate level names in {list(self.names)}")

    @property
    def lowest(self) -> str:
        return self.names[0]

    @property
    def highest(self) -> str:
        return self.names[-1]

    def rank(self, name: str) -> int:
        """Position of ``name`` on the scale (0 = lowest); PolicyError if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise PolicyError(f"unknown level {name!r}; known: {', '.join(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def visible(self, message_level: str, clearance: str) -> bool:
        """True when a message of ``message_level`` may be shown to ``clearance``."""
        return self.rank(message_level) <= self.rank(clearance)
