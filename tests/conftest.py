"""Shared pytest configuration: fixture factories live in tests/fixtures/ and are loaded here."""

pytest_plugins = [
    "tests.fixtures.upstreams",
    "tests.fixtures.proxy",
    "tests.fixtures.smtp_upstreams",
]
