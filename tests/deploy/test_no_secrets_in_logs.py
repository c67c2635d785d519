"""No password or nkey seed reaches a log line, an error message or the server's log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sriov.common import runtime
from sriov.common.bus import Bus
from sriov.common.config import from_env
from sriov.common.errors import BusError

WRONG = "Wr0ng-pa55word-that-must-never-be-logged"


def _url_with_credentials(url: str, user: str, password: str) -> str:
    return url.replace("nats://", f"nats://{user}:{password}@")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, nats-py's included: the most a misconfigured fleet would log."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.parametrize("how", ["url", "options"])
async def test_a_refused_login_names_the_server_not_the_password(
    secured_nats: Any, debug_logs: pytest.LogCaptureFixture, how: str
) -> None:
    url = secured_nats.url
    # A refused login is retried until the connect budget is spent: keep it small.
    kwargs: dict[str, Any] = {"name": "t", "first_connect_attempts": 1, "connect_timeout": 0.5}
    if how == "url":
        url = _url_with_credentials(url, "host-node-a", WRONG)
    else:
        kwargs |= {"user": "host-node-a", "password": WRONG}
    with pytest.raises(BusError) as err:
        await Bus.connect(url, **kwargs)
    message = str(err.value)
    assert "127.0.0.1" in message and "credentials" in message
    assert WRONG not in message and WRONG not in repr(err.value.details)
    assert WRONG not in debug_logs.text
    assert WRONG not in secured_nats.log.read_text()


async def test_a_running_service_logs_no_password(
    secured_nats: Any, debug_logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service started from its generated environment logs its life, never its secret."""
    password = secured_nats.seed("sriov-inventory")
    await secured_nats.provision()  # the service itself only verifies the streams
    env = {**secured_nats.env("sriov-inventory"), "SRIOV_NATS_URL": secured_nats.url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = from_env(runtime.BusSettings)
    stop = asyncio.Event()

    async def body(ctx: runtime.ServiceContext) -> None:
        await ctx.bus.flush()
        stop.set()

    await asyncio.wait_for(runtime.serve("sriov-inventory", "test", settings, body, stop=stop), 20)
    assert "sriov-inventory" in debug_logs.text  # it did log
    assert password not in debug_logs.text
    assert password not in secured_nats.log.read_text()
