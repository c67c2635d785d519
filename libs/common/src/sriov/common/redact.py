"""Secrets out of URLs before they reach a log line or an error message."""

from __future__ import annotations

import re

_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*)(?P<secret>:[^@]*)?@"
)


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``; a bare token
    (``nats://token@h``) -> ``nats://***@h``; a URL without credentials is returned as is."""

    def hide(m: re.Match[str]) -> str:
        if m["secret"] is None:
            return f"{m['scheme']}***@"
        return f"{m['scheme']}{m['user']}:***@"

    return _USERINFO.sub(hide, url)
