"""Servers for the protocol tests: the iris example and protocol_models.py."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def models_server(launch):
    return launch(str(HERE / "protocol_models.py"))
