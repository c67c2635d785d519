"""Entry point of sriov-scheduler: ``sriov-scheduler --database-url DSN [--nats-url ...]``.

Any number of replicas may run against the same database and NATS; they share one queue
group for requests and one durable consumer for state and for asynchronous requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from sriov.common import runtime
from sriov.common.config import parse_args
from sriov.scheduler import server
from sriov.scheduler.server import DESCRIPTION, NAME
from sriov.scheduler.settings import SchedulerSettings


async def body(ctx: runtime.ServiceContext) -> None:
    await server.start(ctx)


def main(argv: Sequence[str] | None = None) -> None:
    async def go() -> None:
        settings = parse_args(SchedulerSettings, argv, prog=NAME, description=DESCRIPTION)
        await runtime.serve(NAME, DESCRIPTION, settings, body)

    runtime.run(go, NAME)


if __name__ == "__main__":
    main()
