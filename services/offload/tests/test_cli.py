"""``sriovctl offload-*`` against a running agent, a real nats-server and a real OVS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sriov.cli.main import cli
from sriov.offload.testing import send_udp

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


async def sriovctl(nats_url: str, *args: str) -> Result:
    """Run the CLI as an operator would (it runs its own event loop: use a thread)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, ["--nats-url", nats_url, *args], catch_exceptions=False
    )


async def test_status_enable_audit_disable(lab: Any, start_agent: Any, nats_url: str) -> None:
    async with start_agent(lab.ovs) as agent:
        host = agent.host_id
        status = await sriovctl(nats_url, "offload-status", "--host", host)
        assert status.exit_code == 0, status.output
        assert host in status.output and "HW_offload" in status.output
        assert "hostconf.missing" not in status.output  # info findings only with --all-findings
        everything = await sriovctl(nats_url, "offload-status", "--host", host, "--all-findings")
        assert "hostconf.missing" in everything.output

        enabled = await sriovctl(nats_url, "offload-enable", "--host", host, "--tc-policy", "none")
        assert enabled.exit_code == 0, enabled.output
        assert lab.ovs.vsctl("get", "Open_vSwitch", ".", "other_config:hw-offload") == '"true"'

        await asyncio.to_thread(send_udp, lab.a.netns, lab.b.address, count=40)
        audit = await sriovctl(nats_url, "offload-audit", "--host", host, "--top", "3")
        assert audit.exit_code == 0, audit.output
        assert "Top non-offloaded flows" in audit.output
        assert "audit.nothing_offloaded" in audit.output
        assert "0.0%" in audit.output and "vm1" in audit.output

        as_json = await sriovctl(nats_url, "--json", "offload-audit", "--host", host)
        data = json.loads(as_json.output)
        assert data["offloaded"] == 0 and data["flows"] >= 1
        assert "vm1" in {f["in_port"] for f in data["top_not_offloaded"]}

        disabled = await sriovctl(nats_url, "offload-disable", "--host", host)
        assert disabled.exit_code == 0, disabled.output
        assert "must restart" in disabled.output and "--allow-restart" in disabled.output
        assert lab.ovs.vsctl("get", "Open_vSwitch", ".", "other_config:hw-offload") == '"false"'


async def test_errors_are_one_line_with_their_code(
    ovs_sandbox: Any, start_agent: Any, nats_url: str
) -> None:
    async with start_agent(ovs_sandbox) as agent:
        ovs_sandbox.kill_vswitchd()
        down = await sriovctl(nats_url, "offload-audit", "--host", agent.host_id)
        assert down.exit_code == 1
        assert "[unavailable]" in down.output and ovs_sandbox.ctl_sock in down.output
    nobody = await sriovctl(nats_url, "offload-enable", "--host", "no-such-host")
    assert nobody.exit_code == 1 and "no service answers" in nobody.output
    bad = await sriovctl(nats_url, "offload-enable", "--host", "bad host")
    assert bad.exit_code == 2 and "host_id 'bad host'" in bad.output
    # without --host the targets are inventory's hosts (tests/hostile/test_forged_discovery.py)
    none = await sriovctl(nats_url, "offload-status")
    assert none.exit_code == 1 and "no service answers sriov.v1.inventory.hosts.list" in none.output
