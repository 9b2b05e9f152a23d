"""Open a stream store from its URL: the one function that picks a backend.

    memory:                          in-process, nothing kept
    sqlite:///abs/path.db            one SQLite file (the default backend)
    sqlite:relative/path.db          relative to the working directory
    sqlite:///path.db?synchronous=NORMAL&create_on_append=false
    nats://host:4222[,host:4222]     NATS JetStream (extra `nats`), ?replicas=3&storage=memory
    s2://basin                       S2 or s2-lite (extra `s2`), token from S2_ACCESS_TOKEN

Backends are imported lazily, so a backend's dependencies are needed only when it is used.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from parallax.core.errors import StoreURLError
from parallax.streams.base import StreamStore

SCHEMES = {
    "memory": "in-process, nothing kept (built in)",
    "sqlite": "one SQLite file (built in)",
    "nats": "NATS JetStream servers (pip install 'parallax[nats]')",
    "s2": "an S2 basin, cloud or s2-lite (pip install 'parallax[s2]')",
}

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _flag(name: str, value: str, url: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise StoreURLError(f"store URL {url!r}: {name} must be true or false, got {value!r}")


def open_store(url: str) -> StreamStore:
    """The store a URL names. Raises StoreURLError naming the known schemes when it names none."""
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme:
        raise StoreURLError(f"store URL {url!r} has no scheme; expected one of: {', '.join(f'{s}:' for s in SCHEMES)}")
    scheme = scheme.lower()
    if scheme == "memory":
        from parallax.streams.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _open_sqlite(url, rest)
    if scheme == "nats":
        from parallax.streams.nats import open_nats

        return open_nats(url)
    if scheme == "s2":
        from parallax.streams.s2 import open_s2

        return open_s2(url)
    known = "; ".join(f"{name}: {what}" for name, what in SCHEMES.items())
    raise StoreURLError(f"unknown store scheme {scheme!r} in {url!r}. Known schemes: {known}")


def _open_sqlite(url: str, rest: str) -> StreamStore:
    from parallax.streams.sqlite import SqliteStore, Synchronous

    path_part, _, query = rest.partition("?")
    if path_part.startswith("//"):
        parsed = urlsplit("sqlite:" + path_part)
        if parsed.netloc not in ("", "localhost"):
            raise StoreURLError(f"store URL {url!r}: a sqlite URL names a local file, not host {parsed.netloc!r}")
        path = parsed.path
    else:
        path = path_part
    if not path or path == "/":
        raise StoreURLError(f"store URL {url!r} names no file; try sqlite:///abs/path.db or sqlite:relative.db")
    options = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    synchronous = options.pop("synchronous", "FULL").upper()
    if synchronous not in _SYNCHRONOUS:
        raise StoreURLError(f"store URL {url!r}: synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    create_on_append = _flag("create_on_append", options.pop("create_on_append", "true"), url)
    if options:
        raise StoreURLError(
            f"store URL {url!r}: unknown option(s) {', '.join(sorted(options))}; known: synchronous, create_on_append"
        )
    sync: Synchronous = synchronous  # type: ignore[assignment]
    return SqliteStore(path, synchronous=sync, create_on_append=create_on_append)
