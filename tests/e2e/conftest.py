"""End-to-end fixtures: the whole stack (``sriov-stack up``'s :class:`Stack`) as real processes.

``stack`` yields a running stack in the test's temporary directory; a test module changes
the environment every process gets by overriding ``stack_env``. ``sriovctl`` runs the real
CLI against it; ``eventually`` polls a condition with a deadline (the stack is asynchronous:
hostd publishes, inventory ingests, the scheduler projects).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sriov.devtools.launcher import Stack, running

T = TypeVar("T")
SRIOVCTL = str(Path(sys.executable).parent / "sriovctl")


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Extra environment for every process of the stack (override in a module)."""
    return {}


@pytest.fixture
def stack(tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Stack]:
    """A running stack: NATS, PostgreSQL, the guide's simulated host, every service."""
    with running(Stack(tmp_path / "state", quiet=True, extra_env=stack_env)) as st:
        yield st


Ctl = Callable[..., Any]


@pytest.fixture
def sriovctl(stack: Stack) -> Ctl:
    """``sriovctl(*args)`` -> stdout (``--json`` output decoded); raises with its output."""

    def run(*args: str, check: bool = True) -> Any:
        res = subprocess.run(
            [SRIOVCTL, *args], capture_output=True, text=True, env=stack.env(), timeout=60
        )
        if check and res.returncode != 0:
            raise AssertionError(f"sriovctl {' '.join(args)} exited {res.returncode}: "
                                 f"{res.stdout}{res.stderr}")  # fmt: skip
        return json.loads(res.stdout) if "--json" in args and res.returncode == 0 else res

    return run


Eventually = Callable[..., Any]


@pytest.fixture
def eventually(stack: Stack) -> Eventually:
    """``eventually(check, what, timeout)``: poll until ``check()`` is truthy; fail naming
    ``what`` (and any service process that died, with its log's tail, unless its name is in
    ``stopped``: the test stopped it on purpose)."""

    def wait(
        check: Callable[[], T], what: str, timeout: float = 30, stopped: tuple[str, ...] = ()
    ) -> T:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                result = check()
            except AssertionError as exc:
                result, last = None, exc
            if result:
                return result
            dead = [p for p in stack.dead() if p.name not in stopped]
            if dead or time.monotonic() > deadline:
                logs = "".join(
                    f"\n--- {p.name} (exit {p.popen.returncode}) ---\n"
                    + (stack.state / "logs" / f"{p.name}.log").read_text()[-2000:]
                    for p in dead
                )
                raise AssertionError(f"timed out waiting for {what}; last: {last}{logs}")
            time.sleep(0.3)

    return wait
