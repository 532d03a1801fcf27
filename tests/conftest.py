"""Shared pytest configuration: fixture factories live in tests/fixtures/ and are loaded here.

The reactor is installed here, before pytest-twisted's ``--reactor=asyncio`` would install one on
asyncio's own loop, so that the in-process proxies of the tests run on the event loop ``caliproxy
run`` takes by default (uvloop when installed). ``CALIPROXY_EVENT_LOOP=asyncio`` runs the suite on
asyncio's loop instead.

Hypothesis runs without its per-example deadline: on a loaded machine one example stalled for a
quarter of a second fails a property that holds. Speed is the benchmarks' subject, not the tests'.
"""

import os

from hypothesis import settings

from caliproxy.cli import install_reactor

install_reactor(os.environ.get("CALIPROXY_EVENT_LOOP", "auto"))

settings.register_profile("caliproxy", deadline=None)
settings.load_profile("caliproxy")

pytest_plugins = [
    "tests.fixtures.upstreams",
    "tests.fixtures.proxy",
    "tests.fixtures.smtp_upstreams",
]
