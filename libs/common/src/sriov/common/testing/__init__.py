"""Test support: real servers for tests (see :mod:`sriov.common.testing.plugin`)."""

from sriov.common.testing.servers import NatsCluster, start_nats_cluster

__all__ = ["NatsCluster", "start_nats_cluster"]
