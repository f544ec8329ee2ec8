"""Printing URLs without their secrets: ``masked_url(url)`` wherever a URL is shown or logged.

Works on any ``scheme://user:password@host`` form (PostgreSQL, Redis, RabbitMQ, SQS keys),
on several URLs in one string (kombu's ``;`` failover lists) and on a ``password=`` query
parameter. The user name stays: it says which role or account is in use.
"""
from __future__ import annotations

import re

MASK = "***"
# scheme://[user]:password@ ; the password ends at the last '@' before the host, and a
# percent-encoded password holds no '@'.
_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:@/\s;]*):(?P<password>[^@\s;]*)@",
                       re.IGNORECASE)
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|secret|token|access_key)=)[^&\s;#]*",
                    re.IGNORECASE)


def masked_url(url: str | None) -> str:
    """``url`` with every password replaced by ``***`` (``None`` shows as ``(none)``)."""
    if url is None:
        return "(none)"
    url = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["password"] else m[0], url)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", url)
