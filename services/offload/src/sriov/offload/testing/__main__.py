"""``python -m sriov.offload.testing <command> DIR``: drive a sandbox from another process.

``restart-vswitchd DIR`` is what tests give ``sriov-offload --restart-command`` (the way a
fleet gives it ``systemctl restart ovs-vswitchd``); ``start``/``stop`` serve demos.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sriov.offload.testing.sandbox import OvsSandbox, SandboxError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sriov.offload.testing")
    parser.add_argument("command", choices=["start", "stop", "restart-vswitchd"])
    parser.add_argument("dir", help="sandbox directory")
    args = parser.parse_args(argv)
    sb = OvsSandbox(args.dir)
    try:
        if args.command == "start":
            sb.start()
            print(f"db_sock={sb.db_sock}\nctl_sock={sb.ctl_sock}")
        elif args.command == "stop":
            sb.stop()
        else:
            sb.restart_vswitchd()
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
