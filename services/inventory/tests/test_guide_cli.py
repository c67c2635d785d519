"""The operator's view: ``sriovctl isolated-device-list`` shows the guide's host as the guide
does (same columns, rows, order and paging footer), and ``sriovctl host-list``."""

from __future__ import annotations

import json

import yaml

from sriov.cli.testing import sriovctl, table_rows
from sriov.common import schemas as m
from sriov.common.bus import Bus
from sriov.inventory import testing as t

#: These hosts send no heartbeats: they stay online however slowly the CLI starts.
NO_HEARTBEATS = t.InventorySettings(heartbeat_timeout=3600)


async def test_guide_host_is_listed_exactly_as_the_guide_lists_it(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url, NO_HEARTBEATS) as rep:
        hostd = t.Hostd(bus, t.GUIDE_HOST)
        await hostd.snapshot(*t.guide_host())
        await t.eventually(lambda: t.drained(bus, rep.pool), what="guide host ingested")

        code, out, err = await sriovctl(nats_url, "isolated-device-list")
        assert code == 0, err
        header, rows, footer = table_rows(out)
        assert header == [
            "ID", "Dev_type", "Model", "Addr", "Vendor_device_id", "Host_id", "Guest_id"
        ]  # fmt: skip
        assert [tuple(r[1:5]) for r in rows] == t.GUIDE_PAGE_ONE
        assert {r[5] for r in rows} == {t.GUIDE_HOST} and {r[6] for r in rows} == {""}
        pcis = ["0000:" + r[3] for r in rows]
        assert [r[0] for r in rows] == [m.device_id(t.GUIDE_HOST, p) for p in pcis]
        assert footer == t.GUIDE_FOOTER
        assert out.startswith("+-") and out.count("\n+-") == 2  # climc's borders

        code, out, _ = await sriovctl(nats_url, "isolated-device-list", "--offset", "15")
        _h, rows, footer = table_rows(out)
        assert footer == "*** Total: 24 Pages: 2 Limit: 15 Offset: 15 Page: 2 ***"
        assert [r[3] for r in rows] == [
            "02:13.0", "02:12.4", "02:12.0", "02:11.4", "02:11.0",
            "02:10.5", "02:10.4", "02:10.1", "02:10.0",
        ]  # fmt: skip

        code, out, _ = await sriovctl(
            nats_url, "isolated-device-list", "--model", t.I350_VF, "--host", t.GUIDE_HOST,
            "--vendor-device-id", "8086:1520", "--dev-type", "NIC", "--free", "--limit", "5",
        )  # fmt: skip
        _h, rows, footer = table_rows(out)
        assert [r[3] for r in rows] == ["03:13.0", "03:12.4", "03:12.0", "03:11.4", "03:11.0"]
        assert footer == "*** Total: 16 Pages: 4 Limit: 5 Offset: 0 Page: 1 ***"

        code, out, _ = await sriovctl(nats_url, "isolated-device-list", "--attached")
        assert table_rows(out)[2] == "*** Total: 0 Pages: 1 Limit: 15 Offset: 0 Page: 1 ***"

        code, out, _ = await sriovctl(nats_url, "--json", "isolated-device-list", "--limit", "2")
        data = json.loads(out)
        assert (data["total"], data["limit"], data["offset"]) == (24, 2, 0)
        assert [d["addr"] for d in data["devices"]] == ["0a:01.1", "0a:01.0"]
        assert data["devices"][0]["host_status"] == "online"
        page = [(d["id"], d["addr"]) for d in data["devices"]]  # state may change in between
        for output in (("-o", "json"), ("--json",), ("-o", "yaml")):  # after the command
            code, out, _ = await sriovctl(nats_url, "isolated-device-list", "--limit", "2", *output)
            again = yaml.safe_load(out) if "yaml" in output else json.loads(out)
            assert code == 0 and [(d["id"], d["addr"]) for d in again["devices"]] == page
            assert isinstance(again["devices"][0]["updated_at"], str)  # as in JSON

        code, out, err = await sriovctl(nats_url, "host-list")
        assert code == 0, err
        header, rows, footer = table_rows(out)
        assert header[:3] == ["ID", "Name", "Status"]
        assert rows[0][0] == t.GUIDE_HOST and rows[0][2] == "online"
        assert rows[0][5:8] == ["4", "24", "24"]
        assert footer == "*** Total: 1 Pages: 1 Limit: 100 Offset: 0 Page: 1 ***"

        dev_id = m.device_id(t.GUIDE_HOST, "0000:03:10.0")
        code, out, _ = await sriovctl(nats_url, "isolated-device-show", dev_id, "--json")
        assert json.loads(out)["addr"] == "03:10.0"


async def test_cli_errors_are_one_clear_line(bus: Bus, nats_url: str, database_url: str) -> None:
    async with t.replica(nats_url, database_url):
        code, out, err = await sriovctl(nats_url, "isolated-device-show", "no-such-id")
        assert code == 1 and out == ""
        assert err.strip() == "sriovctl: error: no device no-such-id in the inventory [not_found]"
        code, _out, err = await sriovctl(nats_url, "host-show", "nope")
        assert code == 1 and "no host 'nope' in the inventory [not_found]" in err
        code, _out, err = await sriovctl(nats_url, "isolated-device-list", "--limit", "0")
        assert code == 2 and "--limit" in err
