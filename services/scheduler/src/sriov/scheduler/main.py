"""Entry point of sriov-scheduler: ``sriov-scheduler --database-url DSN [--nats-url ...]``.

Any number of replicas may run against the same database and NATS; they share one queue
group for requests and one durable consumer for state and for asynchronous requests.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sriov.common import runtime
from sriov.scheduler import server
from sriov.scheduler.server import DESCRIPTION, NAME
from sriov.scheduler.settings import SchedulerSettings, add_args


async def body(ctx: runtime.ServiceContext) -> None:
    await server.start(ctx)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=NAME, description=DESCRIPTION)
    runtime.add_bus_args(parser)
    add_args(parser)
    args = parser.parse_args(argv)

    async def go() -> None:
        settings = runtime.settings_from_args(SchedulerSettings, args, parser).check()
        await runtime.serve(NAME, DESCRIPTION, settings, body)

    runtime.run(go, NAME)


if __name__ == "__main__":
    main()
