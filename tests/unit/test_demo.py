"""The demo's policy gives every sample message the level it was written for, its generated
configuration is valid, and the ports it picks never collide."""

from __future__ import annotations

from pathlib import Path

from caliproxy.config import load_config
from caliproxy.demo.dovecot import free_port
from caliproxy.demo.run import DEMO_POLICY
from caliproxy.demo.seed import samples
from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.verdict import judge


def test_demo_policy_levels_every_sample_as_intended() -> None:
    policy = policy_from_mapping(DEMO_POLICY)
    got = {sample.name: judge(sample.raw, policy)[1].level.level for sample in samples()}
    want = {sample.name: sample.level for sample in samples()}
    assert got == want
    assert set(want.values()) == set(policy.levels.names)  # every level is represented


def test_demo_config_is_valid(tmp_path: Path) -> None:
    from caliproxy.demo.certs import write_demo_certs
    from caliproxy.demo.run import write_demo_config

    certs = write_demo_certs(tmp_path / "tls")

    class FakeUpstream:
        host = "127.0.0.1"
        imaps_port = 10993

    path = write_demo_config(tmp_path, FakeUpstream(), certs.ca_cert, certs.server_cert,  # type: ignore[arg-type]
                             certs.server_key, 9993)
    config = load_config(path)
    assert [listener.port for listener in config.listeners] == [9993, 9994, 9995]


def test_free_port_never_hands_out_a_port_twice() -> None:
    # The kernel alone gives the same free port to two calls in a row about once in 14,000.
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)
