"""Open a stream store from its URL: the one function that picks a backend.

    memory:                          in-process, nothing kept
    sqlite:///abs/path.db            one SQLite file (the default backend)
    sqlite:relative/path.db          relative to the working directory
    sqlite:///path.db?synchronous=NORMAL&create_on_append=false
    nats://host:4222[,host:4222]     NATS JetStream (extra `nats`), ?replicas=3&storage=memory
    s2://basin                       S2 or s2-lite (extra `s2`), token from S2_ACCESS_TOKEN

Backends are imported lazily, so a backend's dependencies are needed only when it is used.

A sqlite URL that cannot name a store is a StoreURLError (a usage error) before anything is
written: a path holding NUL, a directory, an existing file that is not SQLite, a file that cannot
be opened. With `create=False` (commands that only read, or act on runs that must exist) a
sqlite store whose directory does not exist is refused too (a mistyped path), instead of being
created empty; in a directory that exists, a missing file is an empty store, as before.
"""

from __future__ import annotations

import os
import sqlite3
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
_SQLITE_HEADER = b"SQLite format 3\x00"


def _flag(name: str, value: str, url: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise StoreURLError(f"store URL {url!r}: {name} must be true or false, got {value!r}")


def open_store(url: str, *, create: bool = True) -> StreamStore:
    """The store a URL names. Raises StoreURLError naming the known schemes when it names none.
    `create=False`: a sqlite file whose directory does not exist is an error, not a new empty store."""
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme:
        raise StoreURLError(f"store URL {url!r} has no scheme; expected one of: {', '.join(f'{s}:' for s in SCHEMES)}")
    scheme = scheme.lower()
    if scheme == "memory":
        from parallax.streams.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _open_sqlite(url, rest, create)
    if scheme == "nats":
        from parallax.streams.nats import open_nats

        return open_nats(url)
    if scheme == "s2":
        from parallax.streams.s2 import open_s2

        return open_s2(url)
    known = "; ".join(f"{name}: {what}" for name, what in SCHEMES.items())
    raise StoreURLError(f"unknown store scheme {scheme!r} in {url!r}. Known schemes: {known}")


def _check_sqlite_path(url: str, path: str, create: bool) -> None:
    """Refuse, before SQLite creates or opens anything, a path that cannot be a store."""
    if "\x00" in path:
        raise StoreURLError(f"store URL {url!r}: a path cannot hold a NUL character")
    try:
        if os.path.isdir(path):
            raise StoreURLError(f"store URL {url!r}: {path} is a directory; name a file in it, e.g. {path}/parallax.db")
        if os.path.exists(path):
            with open(path, "rb") as file:
                header = file.read(len(_SQLITE_HEADER))
            if header and header != _SQLITE_HEADER:
                raise StoreURLError(f"store URL {url!r}: {path} exists and is not a SQLite database")
        else:
            parent = os.path.dirname(os.path.abspath(path))
            ancestor = parent
            while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
                ancestor = os.path.dirname(ancestor)
            if not os.path.isdir(ancestor):
                raise StoreURLError(f"store URL {url!r}: {ancestor} is a file, not a directory")
            if not create and not os.path.isdir(parent):
                raise StoreURLError(
                    f"store URL {url!r}: no store at {path} (there is no directory {parent}); "
                    "nothing has been written there yet"
                )
    except OSError as e:
        raise StoreURLError(f"store URL {url!r}: cannot open {path}: {e.strerror}") from None


def _open_sqlite(url: str, rest: str, create: bool = True) -> StreamStore:
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
    _check_sqlite_path(url, path, create)
    try:
        return SqliteStore(path, synchronous=sync, create_on_append=create_on_append)
    except (sqlite3.DatabaseError, OSError) as e:  # a race with the checks above, permissions, a full disk
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise StoreURLError(f"store URL {url!r}: cannot open {path}: {reason}") from None
