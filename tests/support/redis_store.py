"""A Redis database as tests see it: an address per database, its Feast hashes dumped."""

from __future__ import annotations

from typing import Any


def redis_db(address: str, offset: int) -> str:
    """``host:port,db=N``: the database ``offset`` after the one ``address`` names (so two
    stores of one test never share a database, whichever database the server gave)."""
    host_port, _, options = address.partition(",")
    base = int(options.removeprefix("db=")) if options else 0
    return f"{host_port},db={(base + offset) % 16}"


def redis_client(address: str) -> Any:
    import redis

    host_port, _, options = address.partition(",")
    host, port = host_port.split(":")
    return redis.Redis(host=host, port=int(port), db=int(options.removeprefix("db=") or 0))


def redis_dump(address: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every Feast hash in the database, field by field (parity's ``parity:`` bookkeeping
    keys left out)."""
    client = redis_client(address)
    try:
        return {
            key: client.hgetall(key)
            for key in client.scan_iter(count=1000)
            if not key.startswith(b"parity:")
        }
    finally:
        client.close()
