"""The ``Open_vSwitch`` table through the OVS Python IDL (``ovs.db.idl``), from asyncio.

The IDL keeps a live replica and reconnects by itself, but it is synchronous and not
thread-safe, so one thread owns it: it runs the IDL's poll loop, executes jobs queued from
the event loop between runs, and pushes a snapshot to the event loop whenever the row
changes (also when someone else edits it, e.g. ``ovs-vsctl`` by hand). The database schema
is fetched from the server itself, so the replica always matches the running OVS.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from sriov.common.errors import SriovError, Unavailable
from sriov.offload.unixctl import describe_socket

log = logging.getLogger(__name__)

TABLE = "Open_vSwitch"
COLUMNS = ["other_config", "ovs_version", "datapath_types", "cur_cfg", "next_cfg"]
HW_OFFLOAD, TC_POLICY, MAX_IDLE = "hw-offload", "tc-policy", "max-idle"


@dataclass(frozen=True)
class OvsConfig:
    """What this agent reads of the root ``Open_vSwitch`` row."""

    other_config: dict[str, str]
    ovs_version: str = ""
    datapath_types: list[str] = field(default_factory=list)
    cur_cfg: int = 0
    """Configuration sequence ovs-vswitchd has applied."""
    next_cfg: int = 0
    """Configuration sequence clients asked for."""

    @property
    def hw_offload(self) -> bool:
        return self.other_config.get(HW_OFFLOAD, "false").strip().lower() == "true"

    @property
    def tc_policy(self) -> str | None:
        return self.other_config.get(TC_POLICY)

    @property
    def max_idle_ms(self) -> int | None:
        raw = self.other_config.get(MAX_IDLE)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def offload_view(self) -> tuple[bool, str | None, int | None]:
        return self.hw_offload, self.tc_policy, self.max_idle_ms


class OvsdbError(SriovError):
    """OVSDB refused a transaction (constraint, conflict that did not resolve)."""

    code = "ovsdb_error"
    status = 500


class _NotReady(Exception):
    """The replica is not connected yet; the job waits for the next loop run."""


Job = Callable[[ovs.db.idl.Idl], Any]


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future[Any]
    txn: ovs.db.idl.Transaction | None = None
    result: Callable[[], Any] | None = None


class Ovsdb:
    """The root row of a (local) OVSDB, read and written from asyncio."""

    def __init__(
        self,
        remote: str,
        *,
        timeout: float = 5.0,
        disconnected_timeout: float = 1.0,
        max_backoff_ms: int = 1000,
    ) -> None:
        if not remote.startswith(("unix:", "tcp:", "ssl:")):
            remote = f"unix:{remote}"
        self.remote = remote
        self.timeout = timeout
        self.disconnected_timeout = disconnected_timeout
        """How long a call waits for a replica that is down (it reconnects meanwhile) before
        answering unavailable, so callers hear why before their own timeouts expire."""
        self.max_backoff_ms = max_backoff_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._jobs: list[_Pending] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[OvsConfig | None], None]] = []
        self._last: OvsConfig | None = None
        self.connected = False
        self.has_root = False
        self.last_error = "not connected yet"

    # --- lifecycle (event loop side) --------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"ovsdb {self.remote}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def on_change(self, listener: Callable[[OvsConfig | None], None]) -> None:
        """Call ``listener`` (on the event loop) with each new snapshot; None = disconnected."""
        self._listeners.append(listener)

    # --- API (event loop side) --------------------------------------------------------------
    async def read(self) -> OvsConfig:
        """The root row as the replica holds it (synchronised with the server)."""
        cfg: OvsConfig = await self._submit(lambda idl: _snapshot(_root(idl)), "read")
        return cfg

    async def update_other_config(
        self,
        set_keys: dict[str, str],
        delete_keys: list[str] = (),  # type: ignore[assignment]
    ) -> int:
        """Set/delete ``other_config`` keys and bump ``next_cfg`` in one transaction.

        Returns the new ``next_cfg``: ovs-vswitchd has applied the change once ``cur_cfg``
        reaches it (see :meth:`wait_applied`).
        """

        def job(idl: ovs.db.idl.Idl) -> ovs.db.idl.Transaction:
            row = _root(idl)
            txn = ovs.db.idl.Transaction(idl)
            txn.add_comment("sriov-offload: set other_config")
            for key in delete_keys:
                row.delkey("other_config", key)
            for key, value in set_keys.items():
                row.setkey("other_config", key, value)
            row.increment("next_cfg")
            return txn

        value: int = await self._submit(job, "write other_config", transaction=True)
        return value

    async def wait_applied(self, next_cfg: int, timeout: float) -> bool:
        """True once ovs-vswitchd reports ``cur_cfg >= next_cfg`` (it reconfigured)."""
        deadline = time.monotonic() + timeout
        while True:
            cfg = await self.read()
            if cfg.cur_cfg >= next_cfg:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    def unavailable(self, doing: str) -> Unavailable:
        if self.connected and not self.has_root:
            return Unavailable(
                f"cannot {doing}: OVSDB at {self.remote} has no Open_vSwitch row yet "
                "(the database was never initialised: ovs-vsctl init, or start ovs-vswitchd)",
                socket=self.remote,
            )
        path = self.remote.removeprefix("unix:")
        why = self.last_error
        if self.remote.startswith("unix:") and not self.connected:
            why = describe_socket(path)
        return Unavailable(
            f"cannot {doing}: OVSDB at {self.remote} is not reachable ({why}; "
            "is ovsdb-server running?)",
            socket=self.remote,
        )

    async def _submit(self, job: Job, doing: str, *, transaction: bool = False) -> Any:
        if self._loop is None:
            raise RuntimeError("Ovsdb.start() was not called")
        fut: asyncio.Future[Any] = self._loop.create_future()
        pending = _Pending(job, fut)
        if transaction:
            pending.result = lambda: None  # marks a transaction job
        with self._lock:
            self._jobs.append(pending)
        self._wake()
        limit = self.timeout if self.connected else min(self.timeout, self.disconnected_timeout)
        try:
            async with asyncio.timeout(limit):
                return await fut
        except TimeoutError:
            raise self.unavailable(doing) from None

    # --- the IDL thread -------------------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        idl: ovs.db.idl.Idl | None = None
        retry_at = 0.0
        while not self._stop.is_set():
            timeout_ms = 1000
            if idl is None and time.monotonic() >= retry_at:
                try:
                    idl = self._open_idl()
                except OSError as exc:
                    self.last_error = str(exc)
                    retry_at = time.monotonic() + 0.5
            if idl is not None:
                try:
                    self._step(idl)
                except Exception as exc:  # a bug in a job must not kill the replica
                    log.exception("OVSDB replica step failed: %s", exc)
            else:
                timeout_ms = 200
            poller = ovs.poller.Poller()
            if idl is not None:
                idl.wait(poller)
            poller.fd_wait(self._wake_r, select.POLLIN)
            poller.timer_wait(timeout_ms)
            poller.block()
            with contextlib.suppress(BlockingIOError, OSError):
                os.set_blocking(self._wake_r, False)
                while os.read(self._wake_r, 4096):
                    pass
        if idl is not None:
            idl.close()

    def _open_idl(self) -> ovs.db.idl.Idl:
        """Fetch the server's schema (one JSON-RPC call), then start a replica of our columns."""
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(self.remote), 2000)
        if err:
            raise OSError(err, f"connect {self.remote}: {os.strerror(err)}")
        conn = ovs.jsonrpc.Connection(stream)
        try:
            request = ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
            err, reply = conn.transact_block(request)
            if err or reply is None or reply.error is not None:
                why = os.strerror(err) if err else getattr(reply, "error", "no reply")
                raise OSError(errno.EPROTO, f"get_schema from {self.remote}: {why}")
            schema_json = reply.result
        finally:
            conn.close()
        helper = ovs.db.idl.SchemaHelper(schema_json=schema_json)
        helper.register_columns(TABLE, COLUMNS)
        idl = ovs.db.idl.Idl(self.remote, helper, probe_interval=0)
        reconnect = getattr(getattr(idl, "_session", None), "reconnect", None)
        if reconnect is not None:  # retry every second, not backing off to 8 s
            reconnect.set_backoff(100, self.max_backoff_ms)
        return idl

    def _step(self, idl: ovs.db.idl.Idl) -> None:
        idl.run()
        ready = idl._session.is_connected() and idl.has_ever_connected()
        if ready != self.connected:
            self.connected = ready
            if not ready:
                self.last_error = "connection lost"
                self._publish(None)
        self.has_root = ready and _has_root(idl)
        snapshot = _snapshot(_root(idl)) if self.has_root else None
        if snapshot is not None and snapshot != self._last:
            self._last = snapshot
            self._publish(snapshot)
        with self._lock:
            jobs, self._jobs = self._jobs, []
        keep: list[_Pending] = []
        for p in jobs:
            if p.future.cancelled():
                continue
            if p.txn is not None:
                self._progress(p, keep)
                continue
            if not ready:
                keep.append(p)
                continue
            try:
                value = p.job(idl)
            except _NotReady:
                keep.append(p)
                continue
            except Exception as exc:
                self._resolve(p, exc=exc)
                continue
            if p.result is not None:  # a transaction: commit, then follow it
                p.txn = value
                self._progress(p, keep)
            else:
                self._resolve(p, value=value)
        with self._lock:
            self._jobs[:0] = keep

    def _progress(self, p: _Pending, keep: list[_Pending]) -> None:
        assert p.txn is not None
        status = p.txn.commit()
        if status == ovs.db.idl.Transaction.INCOMPLETE:
            keep.append(p)
        elif status == ovs.db.idl.Transaction.SUCCESS:
            self._resolve(p, value=p.txn.get_increment_new_value())
        elif status == ovs.db.idl.Transaction.TRY_AGAIN:
            p.txn = None  # the row changed under us or the connection dropped: redo
            keep.append(p)
        else:
            why = p.txn.get_error() or status
            self._resolve(p, exc=OvsdbError(f"OVSDB at {self.remote} refused the change: {why}"))

    def _resolve(self, p: _Pending, *, value: Any = None, exc: BaseException | None = None) -> None:
        assert self._loop is not None

        def done() -> None:
            if p.future.done():
                return
            if exc is not None:
                p.future.set_exception(exc)
            else:
                p.future.set_result(value)

        self._loop.call_soon_threadsafe(done)

    def _publish(self, snapshot: OvsConfig | None) -> None:
        assert self._loop is not None
        for listener in list(self._listeners):
            self._loop.call_soon_threadsafe(listener, snapshot)


def _has_root(idl: ovs.db.idl.Idl) -> bool:
    return bool(idl.tables[TABLE].rows)


def _root(idl: ovs.db.idl.Idl) -> Any:
    rows = list(idl.tables[TABLE].rows.values())
    if not rows:
        raise _NotReady
    return rows[0]


def _snapshot(row: Any) -> OvsConfig:
    return OvsConfig(
        other_config=dict(row.other_config),
        ovs_version=_optional(row.ovs_version),
        datapath_types=sorted(row.datapath_types),
        cur_cfg=int(row.cur_cfg),
        next_cfg=int(row.next_cfg),
    )


def _optional(value: Any) -> str:
    """Optional string columns come back as a list of zero or one element."""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")
