"""Benchmarks: each module has ``main(argv)`` and prints its figures (never asserts them).

Each parses its own options with :func:`parser`, so an unknown or misspelt flag is an error
naming it rather than a default silently used.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg
import psutil

from sriov.common.bus import Bus
from sriov.common.errors import SriovError


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: ``--help`` shows its docstring; unknown flags are refused."""
    name = module.rsplit(".", 1)[-1]
    return argparse.ArgumentParser(
        prog=f"./stack bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


async def stop_process(proc: asyncio.subprocess.Process | None, grace_s: float = 10) -> None:
    """Terminate a daemon the benchmark started (killed if it does not stop in ``grace_s``)."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def spawn_program(
    main: str,
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    profile: str | None = None,
    profile_on_signal: bool = False,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Run a service's ``main`` (``module:function``) as its own process group, as the
    launcher does. ``profile``: under cProfile (CPU time, not wall time, per function), from
    the start or (``profile_on_signal``) from SIGUSR1 on, written to that path when the
    program stops (SIGINT)."""
    module, func = main.split(":")
    if profile:
        code = (
            f"import cProfile, signal, sys, time; from {module} import {func}\n"
            "p = cProfile.Profile(time.process_time)\n"
            "signal.signal(signal.SIGUSR1, lambda *_: p.enable())\n"
            + ("" if profile_on_signal else "p.enable()\n")
            + f"try:\n    {func}(sys.argv[1:])\n"
            f"finally:\n    p.disable(); p.dump_stats({profile!r})"
        )
    else:
        code = f"import sys; from {module} import {func}; {func}(sys.argv[1:])"
    out = open(log, "ab") if log else None  # noqa: SIM115 (the child keeps it)
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], env=dict(env), stdout=out,
            stderr=subprocess.STDOUT if out else None, start_new_session=True,
        )  # fmt: skip
    finally:
        if out:
            out.close()


def stop_programs(procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 10) -> None:
    """SIGINT each program's group (a profiled one writes its statistics), SIGKILL the ones
    still running after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


async def consumer_drained(bus: Bus, stream: str, durable: str) -> bool:
    """The durable consumer was handed every message and acknowledged each one: a cheap
    "all of it is in the database" for consumers that acknowledge after their commit
    (counting rows instead, every 50 ms over hundreds of thousands, takes CPU from the run)."""
    try:
        return await bus.caught_up(stream, durable)
    except SriovError:  # not created yet
        return False


async def count_rows(conn: asyncpg.Connection, schema: str, table: str) -> int:
    """Rows of ``schema.table``, 0 while the service has not created it yet."""
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {schema}.{table}"))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0


_COMPONENTS = (("sriov.inventory", "inventory"), ("sriov-inventory", "inventory"),
               ("sriov.scheduler", "schedulers"), ("sriov-scheduler", "schedulers"),
               ("postgres", "postgresql"), ("nats-server", "nats-server"))  # fmt: skip


def load() -> str:
    """The load average now, for a figure's line (a figure from a busy machine says so)."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


_ECHO = (
    "import socket, sys\n"
    "s = socket.socket(fileno=int(sys.argv[1]))\n"
    "for _ in range(int(sys.argv[2]) + 1):\n"
    "    s.recv(1)\n"
    "    s.send(b'x')\n"
)


def machine(round_trips: int = 5000) -> str:
    """How fast this machine is now, for comparing figures taken at different times: the
    round trip of a byte between two processes (each a wakeup of the other, as every hop of a
    placement is) and a fixed Python loop on one core, on a quiet machine (on this VM a round
    trip is 48-74 µs when the CPUs were idle, waking one from its halt being the cost, and
    half that while other programs keep them busy). The loop tracked the CPU's speed once
    (22 and 39 ms before two runs whose placements cost 2.5 and 4.3 ms of CPU each), but it
    is short and noisy: a hint, not a correction factor."""
    trip = f"a round trip between two processes {_round_trip(round_trips) * 1e6:.0f} µs, "
    started, x = time.perf_counter(), 0
    for i in range(1_000_000):
        x += i
    loop = time.perf_counter() - started
    return f"machine: {trip}a loop {loop * 1e3:.0f} ms"


def _round_trip(n: int) -> float:
    a, b = socket.socketpair()
    echo = subprocess.Popen(  # no fork of this process: its threads would come along
        [sys.executable, "-c", _ECHO, str(b.fileno()), str(n)], pass_fds=[b.fileno()]
    )
    b.close()
    a.send(b"x")  # the echo is running
    a.recv(1)
    started = time.perf_counter()
    for _ in range(n):
        a.send(b"x")
        a.recv(1)
    took = (time.perf_counter() - started) / n
    echo.wait()
    a.close()
    return took


PG_DETAIL_SETTINGS = {
    "track_functions": "all",
    "log_parameter_max_length": "0",
    "log_autovacuum_min_duration": "0",
}
"""PostgreSQL's settings for :class:`PgDetail`: per-function times, statements logged without
their parameters, every autovacuum and autoanalyze logged with its CPU time."""


async def pg_execute(dsn: str, sql: str) -> None:
    """One statement on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_LOGGED = re.compile(r"duration: ([\d.]+) ms\s+(statement|parse|bind|execute)[^:]*:\s*(.*)")
_AUTOVACUUM = re.compile(r"automatic (vacuum|analyze) of table \"([^\"]+)\"")
_AUTOVACUUM_CPU = re.compile(r"CPU: user: ([\d.]+) s, system: ([\d.]+) s, elapsed: ([\d.]+) s")


_DETAIL_QUERIES = (
    "SELECT funcname, calls, round((total_time/calls)::numeric, 3) AS per_call, "
    "round((self_time/calls)::numeric, 3) AS self FROM pg_stat_user_functions "
    "WHERE calls > 0 ORDER BY total_time DESC LIMIT 12",
    "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_dead_tup, n_live_tup, "
    "autovacuum_count FROM pg_stat_user_tables WHERE seq_scan + idx_scan > 0 "
    "ORDER BY seq_tup_read + idx_scan DESC",
    # blocks read: not in shared_buffers, copied from the kernel's page cache
    "SELECT s.relname, heap_blks_read, heap_blks_hit, idx_blks_read, idx_blks_hit, "
    "pg_size_pretty(pg_table_size(s.relid)) AS heap, "
    "pg_size_pretty(pg_indexes_size(s.relid)) AS indexes "
    "FROM pg_statio_user_tables s WHERE heap_blks_hit + idx_blks_hit > 0 "
    "ORDER BY heap_blks_read + idx_blks_read DESC LIMIT 8",
    # every index, read or not: one never read during this window is upkeep on each write
    # here, though another phase may need it (the storm loads devices by host)
    "SELECT relname, indexrelname, idx_scan, idx_tup_read, idx_tup_fetch, "
    "pg_size_pretty(pg_relation_size(indexrelid)) AS size FROM pg_stat_user_indexes "
    "ORDER BY idx_tup_read DESC, pg_relation_size(indexrelid) DESC LIMIT 40",
)
"""What :meth:`PgDetail.report` prints, a row a line: per-function times, per-table scans,
per-table blocks read from outside shared_buffers, and every index with its size and use."""


class PgDetail:
    """PostgreSQL's account of a measured run (``--pg-detail``, the server started with
    :data:`PG_DETAIL_SETTINGS`): per-function times, per-table and per-index reads, and the
    time of each statement, from the server's log (pgserver's build has no
    ``pg_stat_statements``). Logged times are the server's wall time, waits included."""

    def __init__(self, dsn: str, log_file: Path) -> None:
        self.dsn, self.log_file = dsn, log_file
        self._from = 0

    async def start(self) -> None:
        """The counts start here, and every statement is logged until :meth:`report`."""
        await pg_execute(self.dsn, "SELECT pg_stat_reset()")
        await pg_execute(self.dsn, "ALTER SYSTEM SET log_min_duration_statement = 0")
        self._from = self.log_file.stat().st_size
        await pg_execute(self.dsn, "SELECT pg_reload_conf()")

    async def report(self) -> None:
        """Print what :meth:`start` began: an index whose ``idx_tup_read`` is far above its
        ``idx_scan`` is a walk reading more than it returns."""
        await pg_execute(self.dsn, "ALTER SYSTEM RESET log_min_duration_statement")
        await pg_execute(self.dsn, "SELECT pg_reload_conf()")
        conn = await asyncpg.connect(self.dsn)
        try:
            await asyncio.sleep(1.5)  # sessions report their counts about once a second
            for sql in _DETAIL_QUERIES:
                for r in await conn.fetch(sql):
                    print("    ", dict(r))
        finally:
            await conn.close()
        self._print_statements()

    def _print_statements(self, top: int = 20) -> None:
        with self.log_file.open("rb") as f:
            f.seek(self._from)
            lines = f.read().decode(errors="replace").splitlines()
        total: dict[str, float] = collections.defaultdict(float)
        runs: collections.Counter[str] = collections.Counter()
        autovacuum: str | None = None
        for line in lines:
            if found := _AUTOVACUUM.search(line):
                autovacuum = " ".join(found.groups())
            elif autovacuum and (cpu := _AUTOVACUUM_CPU.search(line)):
                user, system, elapsed = cpu.groups()
                print(f"    autovacuum: {autovacuum}: CPU {float(user) + float(system):.2f}s, "
                      f"elapsed {elapsed}s")  # fmt: skip
                autovacuum = None
            if found := _LOGGED.search(line):
                ms, phase, sql = found.groups()
                key = " ".join(sql.split())[:100]
                total[key] += float(ms)
                runs[key] += phase in ("statement", "execute")
        print(f"    statements by the server's time, of {sum(total.values()) / 1000:.1f}s "
              "(ms in all, runs, ms per run; parse and bind included):")  # fmt: skip
        for key, ms in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {ms:9.1f} {runs[key]:7d} {ms / max(runs[key], 1):8.3f}  {key}")


async def session_names(dsn: str) -> dict[int, str]:
    """PostgreSQL's server process of each session, by the ``application_name`` it gave."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid, application_name FROM pg_stat_activity")
    finally:
        await conn.close()
    return {r["pid"]: r["application_name"] or "unnamed" for r in rows}


def cpu_split(
    sessions: dict[int, str] | None = None, since: collections.Counter[str] | None = None
) -> str:
    """CPU seconds so far (or ``since`` an earlier :func:`cpu_used`) of each program this
    benchmark started (its children); PostgreSQL's by role, its exited processes (autovacuum
    workers, closed connections) included, and its sessions by the name each gave
    (``sessions`` from :func:`session_names`)."""
    used = cpu_used(sessions)
    if since is not None:
        used.subtract(since)
    fmt = "{:.0f}s" if since is None else "{:.1f}s"
    names = dict.fromkeys([n for _k, n in _COMPONENTS] + ["other"])
    main = ", ".join(f"{n} {fmt.format(used[n])}" for n in names if used[n] >= 0.05)
    roles = sorted((n[3:], v) for n, v in used.items() if n[:3] == "pg " and v >= 0.5)
    pg = ", ".join(f"{n} {fmt.format(v)}" for n, v in roles)
    return f"{main} (postgresql: {pg})" if pg else main


def tcp_segments() -> int:
    """TCP segments sent so far, machine-wide (``/proc/net/snmp``): on loopback every one is
    a message some program here wrote, and the kernel does the receiver's work in the sender's
    write, so they cost per segment, not per byte."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    head, values = [ln for ln in lines if ln[0] == "Tcp:"]
    return int(values[head.index("OutSegs")])


def traffic_per(count: int, since: collections.Counter[str], own: tuple[int, int]) -> str:
    """TCP segments sent and each program's wakeups (voluntary context switches) per unit of
    work (``count`` placements) since an earlier :func:`cpu_used` and :func:`traffic_mark`:
    each is a message crossing processes, which the CPU seconds alone do not show."""
    used = cpu_used()
    used.subtract(since)
    segments, me = traffic_mark()
    names = dict.fromkeys(n for _k, n in _COMPONENTS if used[n] >= 0.05)
    parts = [f"{n} {used[f'wakeups {n}'] / count:.1f}" for n in names]
    parts.append(f"requesters {(me - own[1]) / count:.1f}")
    return f"TCP segments {(segments - own[0]) / count:.1f}; wakeups: " + ", ".join(parts)


def traffic_mark() -> tuple[int, int]:
    """The machine's TCP segments sent so far and this process's voluntary context switches
    (the requesters' wakeups), for :func:`traffic_per`."""
    return tcp_segments(), wakeups(os.getpid())


def wakeups(pid: int) -> int:
    """Voluntary context switches of all a process's threads (nats-server's are Go threads;
    ``/proc/PID/status`` counts only the first)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


def cpu_used(sessions: dict[int, str] | None = None) -> collections.Counter[str]:
    """CPU seconds so far, by the names :func:`cpu_split` prints."""
    used: collections.Counter[str] = collections.Counter()
    for child in psutil.Process().children(recursive=True):
        try:
            cmd, t = " ".join(child.cmdline()), child.cpu_times()
        except psutil.Error:
            continue
        name = next((n for key, n in _COMPONENTS if key in cmd), "other")
        used[name] += t.user + t.system
        used[f"wakeups {name}"] += wakeups(child.pid)
        if name == "postgresql":
            session = "sessions" if "postgres:" in cmd else ""
            role = next((r for r in _PG_ROLES if r in cmd), session)
            if role == "sessions" and sessions is not None:
                role = f"sessions of {sessions.get(child.pid, 'clients connected since')}"
            if role:
                used[f"pg {role}"] += t.user + t.system
            else:  # the postmaster: what its exited children used
                used["postgresql"] += t.children_user + t.children_system
                used["pg exited"] += t.children_user + t.children_system
    return used


_PG_ROLES = ("autovacuum", "checkpointer", "walwriter", "background writer", "logical")
