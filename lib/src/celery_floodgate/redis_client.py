"""A redis-py client for any Redis URL kombu accepts as a broker (the meter's Redis).

redis-py reads redis:// and rediss:// itself, but not kombu's other forms, and
its TLS defaults differ; a meter that follows a Redis broker must reach the same
server the same way:

* ``sentinel://h1:26379;sentinel://h2:26379/0``: the master the sentinels name for
  ``master_name`` (followed on failover), with ``sentinel_kwargs`` for the sentinels;
* ``rediss://``: TLS with the URL's ``ssl_*`` query (kombu's spellings, e.g.
  ``ssl_cert_reqs=CERT_NONE``) over ``ssl`` (the app's ``broker_use_ssl``), and with
  neither, kombu's default: no certificate check;
* ``redis+socket:///path/to/redis.sock?virtual_host=1``: a unix socket.
"""
from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import redis
from kombu.utils.url import parse_ssl_cert_reqs, url_to_parts
from redis.sentinel import Sentinel

from celery_floodgate.transports.urls import scheme_of, urls_of

SENTINEL_PORT = 26379


def redis_client(url: str, options: Mapping[str, Any] | None = None,
                 timeout_s: float = 1.0) -> redis.Redis:
    """A client for ``url`` whose connects and reads time out after ``timeout_s``.

    ``options``: ``master_name`` and ``sentinel_kwargs`` (for sentinel://, as in
    ``broker_transport_options``), ``ssl`` (``broker_use_ssl``: a dict of ``ssl_*``
    keys, or True). Raises ValueError for a sentinel:// URL without a master name.
    """
    options = options or {}
    urls = urls_of(url)
    scheme = scheme_of(urls[0])
    timeouts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if scheme == "sentinel":
        return _sentinel_master(urls, options, timeouts)
    if scheme == "redis+socket":
        return _unix_socket(urls[0].partition("+")[2], timeouts)
    if scheme == "rediss":
        return _tls(urls[0], options.get("ssl"), timeouts)
    return redis.Redis.from_url(urls[0], **timeouts)


def master_name_of(url: str, options: Mapping[str, Any]) -> str | None:
    """The Sentinel master name: ``options["master_name"]``, or the URL's ``master_name=``."""
    name = options.get("master_name") or url_to_parts(urls_of(url)[0]).query.get("master_name")
    return str(name) if name else None


def _database(path: str | None) -> int:
    return int(path.strip("/") or 0) if path else 0


def _credentials(parts: Any) -> dict[str, Any]:
    return {k: v for k, v in (("username", parts.username), ("password", parts.password)) if v}


def _sentinel_master(urls: list[str], options: Mapping[str, Any],
                     timeouts: dict[str, Any]) -> redis.Redis:
    name = master_name_of(urls[0], options)
    if not name:
        raise ValueError("a sentinel:// URL needs the master's name: "
                         "broker_transport_options={'master_name': ...}")
    all_parts = [url_to_parts(u) for u in urls]
    hosts = [(p.hostname or "127.0.0.1", p.port or SENTINEL_PORT) for p in all_parts]
    first = all_parts[0]
    tls = _ssl_options(options.get("ssl"), {})
    manager = Sentinel(hosts, sentinel_kwargs=options.get("sentinel_kwargs"), **timeouts)
    client: redis.Redis = manager.master_for(
        name, redis.Redis, db=_database(first.path), **_credentials(first), **timeouts,
        **({"ssl": True, **tls} if tls else {}))
    return client


def _unix_socket(url: str, timeouts: dict[str, Any]) -> redis.Redis:
    parts = url_to_parts(url)
    return redis.Redis(unix_socket_path="/" + (parts.path or ""),
                       db=_database(parts.query.get("virtual_host")),
                       socket_timeout=timeouts["socket_timeout"], **_credentials(parts))


def _tls(url: str, broker_ssl: Any, timeouts: dict[str, Any]) -> redis.Redis:
    parts = url_to_parts(url)
    in_url = {k: v for k, v in parts.query.items() if k.startswith("ssl_")}
    tls = _ssl_options(broker_ssl, in_url) or {"ssl_cert_reqs": ssl.CERT_NONE}
    return redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                       db=_database(parts.path), ssl=True, **_credentials(parts),
                       **tls, **timeouts)


def _ssl_options(broker_ssl: Any, in_url: Mapping[str, str]) -> dict[str, Any]:
    """The URL's ``ssl_*`` query over ``broker_use_ssl``, as kombu merges them."""
    found: dict[str, Any] = dict(broker_ssl) if isinstance(broker_ssl, Mapping) else {}
    for key, value in in_url.items():
        if key == "ssl_cert_reqs":
            found[key] = parse_ssl_cert_reqs(value)
        elif key == "ssl_check_hostname":
            found[key] = value.lower() != "false"
        else:
            found[key] = value
    return found
