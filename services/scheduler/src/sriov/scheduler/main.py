"""Entry point of sriov-scheduler (skeleton: connects and registers its micro service)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sriov.common import runtime

NAME = "sriov-scheduler"
DESCRIPTION = "VF placement"


async def body(ctx: runtime.ServiceContext) -> None:
    """Register endpoints and start loops; returns at once, the runtime waits for stop."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=NAME, description=DESCRIPTION)
    runtime.add_bus_args(parser)
    args = parser.parse_args(argv)
    settings = runtime.settings_from_args(runtime.BusSettings, args)
    runtime.run(lambda: runtime.serve(NAME, DESCRIPTION, settings, body), NAME)


if __name__ == "__main__":
    main()
