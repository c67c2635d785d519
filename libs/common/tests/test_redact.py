"""``redact_url``: what reaches a log line or an error message keeps no secret."""

from __future__ import annotations

import pytest

from sriov.common.redact import redact_url


def test_password_is_hidden_and_the_user_kept() -> None:
    assert redact_url("nats://admin:s3cret@10.0.0.1:4222") == "nats://admin:***@10.0.0.1:4222"


def test_a_bare_token_is_hidden_entirely() -> None:
    assert redact_url("nats://t0k3n@nats.example:4222") == "nats://***@nats.example:4222"


def test_every_url_of_a_comma_separated_list_is_redacted() -> None:
    urls = "nats://a:pw-one@n1:4222,nats://b:pw-two@n2:4222,tls://tok@n3:4222"
    assert redact_url(urls) == "nats://a:***@n1:4222,nats://b:***@n2:4222,tls://***@n3:4222"


@pytest.mark.parametrize(
    "url",
    [
        "nats://127.0.0.1:4222",
        "nats://n1:4222,nats://n2:4222",
        "postgresql:///sriov?host=/run/postgresql",
        "not a url at all",
    ],
)
def test_a_url_without_credentials_is_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_a_dsn_keeps_host_port_and_database() -> None:
    dsn = "postgresql://sriov:pg-pass@db.internal:5433/inventory?sslmode=require"
    assert redact_url(dsn) == "postgresql://sriov:***@db.internal:5433/inventory?sslmode=require"


def test_an_empty_password_still_reads_as_redacted() -> None:
    assert redact_url("postgresql://sriov:@db:5432/x") == "postgresql://sriov:***@db:5432/x"
