"""A real nats-server configured with the fleet's generated accounts, users and permissions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sriov.cli import nats_auth as na
from sriov.cli import nats_bundle as nb
from sriov.common.bus import Bus
from sriov.devtools.embedded import NatsServer

HOSTS = ("node-a", "node-b")
CLIENT = "cloud"


@dataclass
class SecuredNats:
    server: NatsServer
    bundle: nb.Bundle

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log(self) -> Path:
        return self.server.store_dir / "nats.log"

    def env(self, user: str) -> dict[str, str]:
        ident = next(i for i in self.bundle.identities if i.user == user)
        return nb.read_env(self.bundle.files[ident.env_name])

    def seed(self, user: str) -> str:
        return self.env(user)["SRIOV_NATS_NKEY_SEED"]

    async def provision(self) -> None:
        """The deploy job's step: the stream admin provisions; services only verify."""
        admin = await self.connect("sriov-stream-admin")
        try:
            await admin.ensure_streams()
        finally:
            await admin.close()

    async def connect(self, user: str) -> Bus:
        """Connect exactly as a daemon with that identity's environment file would."""
        env = self.env(user)
        return await Bus.connect(
            self.url,
            name=f"test/{user}",
            nkey_seed=env["SRIOV_NATS_NKEY_SEED"],
            inbox_prefix=env.get("SRIOV_NATS_INBOX_PREFIX"),
            first_connect_attempts=1,
        )


def host_user(host_id: str) -> str:
    return na.host_identity(host_id).user


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    """nats-server + JetStream whose only users are those ``build_bundle`` generated."""
    bundle = nb.build_bundle(HOSTS, clients=[CLIENT])
    server = NatsServer(store_dir=tmp_path / "nats", config_text=bundle.files[nb.SERVER_FILE])
    server.start()
    try:
        yield SecuredNats(server, bundle)
    finally:
        server.stop()
