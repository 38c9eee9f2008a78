"""Fixtures of the security tests: this machine's address off loopback, and a model source
over HTTP that records what it is asked for."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
from security_helpers import Source


@pytest.fixture(scope="session")
def outside_address() -> str:
    """An address of this machine that is not loopback: a client connecting to it from here
    is, to the server, a peer that is not on loopback."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for address in found:
        ip = ipaddress.ip_address(address)
        if ip.version == 4 and not ip.is_loopback:
            return address
    pytest.skip("this machine has no IPv4 address besides loopback")


@pytest.fixture(scope="module")
def source():
    server = Source()
    yield server
    server.server.shutdown()
