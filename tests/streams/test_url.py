from __future__ import annotations

from pathlib import Path

import pytest

from parallax.core.errors import StoreURLError
from parallax.settings import Settings, find_project_root
from parallax.streams import open_store
from parallax.streams.memory import MemoryStore
from parallax.streams.sqlite import SqliteStore


async def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite://{tmp_path / 'a.db'}?synchronous=normal")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == tmp_path / "a.db" and absolute.synchronous == "NORMAL"
    await absolute.close()
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:sub/b.db?create_on_append=false")
    assert isinstance(relative, SqliteStore)
    assert relative.path.resolve() == tmp_path / "sub" / "b.db" and not relative.create_on_append
    await relative.close()
    assert isinstance(open_store("memory:"), MemoryStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nowhere", "has no scheme"),
        ("postgres://db/x", "unknown store scheme 'postgres'"),
        ("sqlite:", "names no file"),
        ("sqlite://host/x.db", "not host 'host'"),
        ("sqlite:x.db?synchronous=fast", "synchronous must be one of"),
        ("sqlite:x.db?wal=1", "unknown option(s) wal"),
        ("sqlite:x.db?create_on_append=maybe", "must be true or false"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(StoreURLError) as info:
        open_store(url)
    assert message in str(info.value)


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(StoreURLError, match="sqlite: one SQLite file"):
        open_store("kafka://x")


def test_default_store_url(tmp_path: Path) -> None:
    (tmp_path / "parallax.toml").write_text("")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_project_root(nested) == tmp_path
    assert Settings().default_store_url(nested) == f"sqlite://{tmp_path / '.parallax' / 'parallax.db'}"
    assert Settings.from_env({"PARALLAX_STORE": "memory:"}).default_store_url(nested) == "memory:"
