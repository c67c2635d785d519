"""sriovctl's placement commands as an operator runs them, including the guide's two commands."""

from __future__ import annotations

import json

from sriov.cli.testing import sriovctl
from sriov.scheduler.testing import I350, PfSpec

NET = "8056e77e-dc14-44b5-8ef9-e43aff344c0d"
GUEST = "c15a5a99-75ea-4b8c-8c7a-521e5f980db4"


async def test_the_guides_commands(nats_url, fleet, sync) -> None:
    fleet.add_host("host-a", [PfSpec("0000:03:00.0", model=I350, count=7, network=NET,
                                     ifname="eth2")])  # fmt: skip
    await sync()
    # $ climc server-create --disk ... --net 'sriov-nic-model=I350 ...' --ncpu 2 --mem-spec 4G
    #       wyq-test-sriov-nic --auto-start
    code, out, err = await sriovctl(
        nats_url, "server-create", "--disk", "ae0de3e9-dd45-458e-83b2-4dbc48d70234",
        "--net", f"sriov-nic-model={I350}", "--ncpu", "2", "--mem-spec", "4G",
        "wyq-test-sriov-nic", "--auto-start",
    )  # fmt: skip
    assert code == 0, err
    assert "wyq-test-sriov-nic" in out and I350 in out and "host-a" in out and "eth2" in out
    assert "| Guest_id" in out and "*** Guest wyq-test-sriov-nic on host: 1 VF(s) ***" in out
    assert "--disk, --ncpu, --mem-spec, --auto-start not handled" in err
    # $ climc server-attach-network c15a5a99-... 'sriov-nic-model=I350 ...:8056e77e-...'
    code, out, err = await sriovctl(nats_url, "server-create", GUEST, "--net",
                                    f"sriov-nic-model={I350}")  # fmt: skip
    assert code == 0, err
    code, out, err = await sriovctl(
        nats_url, "server-attach-network", GUEST, f"sriov-nic-model={I350}:{NET}"
    )
    assert code == 0, err
    assert f"sriov-nic-model={I350}:{NET}" in out and "Attached to guest" in out
    code, out, _ = await sriovctl(nats_url, "--json", "server-show", GUEST)
    shown = json.loads(out)
    assert code == 0 and len(shown["assignments"]) == 2
    assert {a["host_id"] for a in shown["assignments"]} == {"host-a"}


async def test_show_confirm_release_and_errors(nats_url, fleet, sync) -> None:
    fleet.add_host("h1", [PfSpec("0000:03:00.0", model=I350, count=2)])
    await sync()
    code, out, err = await sriovctl(nats_url, "server-create", "g1", "--net",
                                    f"sriov-nic-model={I350}", "--confirm", "--json")  # fmt: skip
    assert code == 0, err
    placed = json.loads(out)
    assert placed["assignments"][0]["state"] == "confirmed"
    device = placed["assignments"][0]["device_id"]
    code, out, _ = await sriovctl(nats_url, "server-show", "g1")
    assert code == 0 and device in out and "confirmed" in out
    code, out, _ = await sriovctl(nats_url, "server-release", "g1", device)
    assert code == 0 and f"released 1 VF(s) of guest g1: {device}" in out
    code, out, _ = await sriovctl(nats_url, "server-release", "g1")
    assert code == 0 and "guest g1 held no VF: nothing to release" in out
    code, _, err = await sriovctl(nats_url, "server-show", "g1")
    assert code == 1 and "guest g1 holds no VF" in err and "[not_found]" in err
    code, _, err = await sriovctl(nats_url, "server-create", "g2", "--net", "sriov-nic-model=X9")
    assert code == 1 and "no VF of model 'X9'" in err and "[unknown_model]" in err
    code, _, err = await sriovctl(nats_url, "server-create", "g2", "--net", "model=X9")
    assert code == 2 and "nets[0].desc" in err and "[invalid_request]" in err
    i350 = f"sriov-nic-model={I350}"
    code, _, err = await sriovctl(nats_url, "server-create", "g2", "--net", i350,
                                  "--numa-policy", "required")  # fmt: skip
    assert code == 2 and "numa_node" in err
    code, _, err = await sriovctl(nats_url, "server-create", "g2", "--net", i350,
                                  "--net", i350, "--net", i350)  # fmt: skip
    assert code == 1 and "[no_capacity]" in err and "nearest capacity: host h1 has 2" in err
    # the replica is listed once, and the refusals above count as its errors
    code, out, err = await sriovctl(nats_url, "--json", "services", "--name", "sriov-scheduler")
    [replica] = json.loads(out)
    assert code == 0 and replica["requests"] >= 8 and replica["errors"] >= 3, out
