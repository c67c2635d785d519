"""What a hostile identity can cost the bus (issue 17): login latency under failed logins,
and the size of ``SRIOV_HOST_EVENTS`` after a host floods it.

1. A valid host connects (CONNECT, authenticated, first PING answered) ``--logins`` times,
   first on an idle server, then while ``--attackers`` concurrent connections keep logging
   in with a wrong key: with nkeys (the fleet's configuration, ``sriovctl nats-config``;
   the attacker signs the nonce for a user's real public key with another seed) and with
   bcrypt cost-11 passwords (what the fleet used before; the attacker names a real user with
   a wrong password). The attackers run in a process of their own, speaking the NATS
   protocol over raw sockets, so their client-side cost does not slow the measuring loop.
2. A host identity publishes messages of the stream's maximum size on its own heartbeat
   subject (``--flood`` of them), then one over the limit: printed are what the flooder saw
   (acks, refusals) and the stream's messages and bytes.

    ./stack bench nats_auth [--attackers=150] [--logins=20] [--flood=400]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import bcrypt
import nkeys  # type: ignore[import-untyped]

from bench import parser
from sriov.cli import nats_auth as na
from sriov.cli import nats_bundle as nb
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.bus.streams import spec_of
from sriov.common.errors import BusError
from sriov.devtools.embedded import NatsServer

HOST, OTHER = "node-a", "node-b"


# ---------------------------------------------------------------------------------------------
# Attackers: raw NATS protocol, one process
# ---------------------------------------------------------------------------------------------
def _connect_line(mode: str, info: dict[str, object], secret: str) -> bytes:
    opts: dict[str, object] = {"verbose": False, "pedantic": False, "protocol": 1}
    if mode == "nkey":  # a real user's public key, the nonce signed with another seed
        victim_pub, wrong_seed = secret.split(" ")
        kp = nkeys.from_seed(bytearray(wrong_seed.encode()))
        sig = kp.sign(str(info["nonce"]).encode())
        opts |= {"nkey": victim_pub, "sig": base64.urlsafe_b64encode(sig).decode().rstrip("=")}
    else:  # a real user, a wrong password
        opts |= {"user": secret, "pass": "not-the-password"}
    return f"CONNECT {json.dumps(opts)}\r\nPING\r\n".encode()


async def _attacker(port: int, mode: str, secret: str, stop: float, count: list[int]) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            info = json.loads((await reader.readline()).split(b" ", 1)[1])
            writer.write(_connect_line(mode, info, secret))
            await writer.drain()
            await reader.readline()  # -ERR 'Authorization Violation', then the server closes
            writer.close()
            count[0] += 1
        except (OSError, ValueError, IndexError):
            await asyncio.sleep(0.01)


def _attack(port: int, mode: str, secret: str, attackers: int, seconds: float, out: object) -> None:
    count = [0]

    async def run() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(
            *(_attacker(port, mode, secret, stop, count) for _ in range(attackers))
        )

    asyncio.run(run())
    out.value = count[0]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# The measured side
# ---------------------------------------------------------------------------------------------
async def _login(url: str, **auth: str) -> float | None:
    """Seconds to a usable connection; None when it failed (the services' 5 s connect
    timeout, one attempt)."""
    t0 = time.perf_counter()
    try:
        bus = await Bus.connect(url, name="bench-login", first_connect_attempts=1, **auth)  # type: ignore[arg-type]
    except BusError:
        return None
    await bus.flush()
    elapsed = time.perf_counter() - t0
    await bus.close()
    return elapsed


async def _logins(url: str, n: int, auth: dict[str, str]) -> list[float | None]:
    return [await _login(url, **auth) for _ in range(n)]


def _ms(results: list[float | None]) -> str:
    xs = sorted(x for x in results if x is not None)
    failed = len(results) - len(xs)
    if not xs:
        return f"all {failed} failed"
    p50 = statistics.median(xs) * 1000
    p90 = xs[int(0.9 * (len(xs) - 1))] * 1000
    return (f"p50 {p50:7.1f} ms  p90 {p90:7.1f} ms  max {xs[-1] * 1000:7.1f} ms  "
            f"failed {failed}/{len(results)}")  # fmt: skip


async def _under_attack(
    url: str, port: int, mode: str, secret: str, auth: dict[str, str], args: argparse.Namespace
) -> tuple[list[float | None], list[float | None], int]:
    idle = await _logins(url, args.logins, auth)
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Value("q", 0)
    seconds = args.attack_s
    proc = ctx.Process(target=_attack, args=(port, mode, secret, args.attackers, seconds, done))
    proc.start()
    await asyncio.sleep(min(2.0, seconds / 4))  # let the attack ramp up
    busy = await _logins(url, args.logins, auth)
    await asyncio.to_thread(proc.join)
    return idle, busy, int(done.value)


def _bcrypt_config(password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(11)).decode()
    return (
        f'accounts: {{ SRIOV: {{ users: [ {{ user: "host-{HOST}", password: "{hashed}" }} ] }} }}\n'
    )


async def logins(args: argparse.Namespace, base: Path) -> None:
    bundle = nb.build_bundle([HOST, OTHER])
    env = nb.read_env(bundle.files[na.host_identity(HOST).env_name])
    victim_pub = nb.public_key(nb.read_env(bundle.files[na.host_identity(OTHER).env_name])
                               ["SRIOV_NATS_NKEY_SEED"])  # fmt: skip
    password = base64.b32encode(os.urandom(24)).decode()  # 192 random bits, as before
    cases = [
        ("nkey", bundle.files[nb.SERVER_FILE], f"{victim_pub} {nb.new_seed()}",
         {"nkey_seed": env["SRIOV_NATS_NKEY_SEED"]}),
        ("bcrypt-11", _bcrypt_config(password), f"host-{HOST}",
         {"user": f"host-{HOST}", "password": password}),
    ]  # fmt: skip
    print(f"login of a valid host, {args.logins} sequential logins; "
          f"{args.attackers} concurrent wrong-key logins for {args.attack_s:.0f} s")  # fmt: skip
    for mode, conf, secret, auth in cases:
        with NatsServer(store_dir=base / f"nats-{mode}", config_text=conf) as server:
            port = int(server.url.rsplit(":", 1)[1])
            idle, busy, failed = await _under_attack(
                server.url, port, "nkey" if mode == "nkey" else "password", secret, auth, args
            )
        print(f"  {mode:10s} idle:         {_ms(idle)}")
        print(f"  {mode:10s} under attack: {_ms(busy)}   ({failed} failed logins, "
              f"{failed / args.attack_s:.0f}/s)")  # fmt: skip


async def flood(args: argparse.Namespace, base: Path) -> None:
    bundle = nb.build_bundle([HOST])
    with NatsServer(store_dir=base / "nats-flood", config_text=bundle.files[nb.SERVER_FILE]) as srv:

        def env(user: str) -> dict[str, str]:
            ident = next(i for i in bundle.identities if i.user == user)
            return nb.read_env(bundle.files[ident.env_name])

        async def connect(user: str) -> Bus:
            e = env(user)
            seed, inbox = e["SRIOV_NATS_NKEY_SEED"], e.get("SRIOV_NATS_INBOX_PREFIX")
            return await Bus.connect(srv.url, name=f"bench/{user}", nkey_seed=seed,
                                     inbox_prefix=inbox)  # fmt: skip

        admin = await connect("sriov-stream-admin")
        await admin.ensure_streams()
        host = await connect(na.host_identity(HOST).user)
        ops = await connect("sriov-operator")
        spec = spec_of(s.STREAM_HOST_EVENTS)
        body = os.urandom((spec.max_msg_size - 4096) // 2).hex().encode()  # headers fit
        subject = s.host_heartbeat(HOST).subject
        acked = refused = 0
        t0 = time.perf_counter()
        for i in range(args.flood):
            try:
                await host.js_publish_raw(subject, body, {"Nats-Msg-Id": f"flood-{i}"}, 10)
                acked += 1
            except BusError:
                refused += 1
        elapsed = time.perf_counter() - t0
        oversize = "accepted"
        try:
            await host.js_publish_raw(subject, body + body, {}, 5)
        except BusError as exc:
            oversize = f"refused ({str(exc)[:70]})"
        raw = await ops.request_raw(s.js_api("STREAM", "INFO", s.STREAM_HOST_EVENTS), b"")
        state = json.loads(raw.data)["state"]
        perms = na.host_identity(HOST).permissions
        assert perms is not None
        subjects = sum(1 for x in perms.publish if x.startswith(f"sriov.v1.host.{HOST}."))
        for bus in (ops, host, admin):
            await bus.close()
    print(f"flood: {args.flood} messages of {len(body) / 2**20:.2f} MiB on {subject} "
          f"in {elapsed:.1f} s")  # fmt: skip
    big = 2 * len(body) / 2**20
    print(f"  flooder saw: {acked} acked, {refused} refused; one of {big:.2f} MiB {oversize}")
    stored, mib = state["messages"], state["bytes"] / 2**20
    print(f"  {s.STREAM_HOST_EVENTS}: {stored} messages, {mib:.1f} MiB "
          f"(per subject {spec.per_subject}, max_msg_size {spec.max_msg_size / 2**20:.0f} MiB, "
          f"max_bytes {spec.max_bytes / 2**30:.0f} GiB)")  # fmt: skip
    bound = subjects * spec.per_subject * spec.max_msg_size
    print(
        f"  one host's bound: {subjects} subjects x {spec.per_subject} x "
        f"{spec.max_msg_size / 2**20:.0f} MiB = {bound / 2**30:.1f} GiB; evicts only its own"
    )


async def run(args: argparse.Namespace) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-nats-auth-") as tmp:
        await logins(args, Path(tmp))
        await flood(args, Path(tmp))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: list[str] | None = None) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--attackers", type=int, default=150, help="concurrent wrong-key logins")
    p.add_argument("--logins", type=int, default=20, help="valid logins measured per phase")
    p.add_argument("--attack-s", type=float, default=12.0, help="seconds the attack lasts")
    p.add_argument("--flood", type=int, default=400, help="max-size messages the host sends")
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
