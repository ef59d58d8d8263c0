"""MovieLens download and cache, exercised against local files and a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recvae.data import movielens
from recvae.data.ingest import IngestOptions, ingest
from recvae.errors import RecvaeError

U_DATA = "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n"


def fake_zip(directory: Path) -> tuple[Path, str]:
    archive = directory / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("ml-100k/u.data", U_DATA)
        zipped.writestr("ml-100k/README", "not the real thing")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_from_file_url_caches_the_ratings_file(tmp_path: Path) -> None:
    archive, md5 = fake_zip(tmp_path)
    release = movielens.Release(archive.as_uri(), md5, "ml-100k/u.data")
    cache = tmp_path / "cache"
    ratings = movielens.fetch("ml-100k", cache, release)
    assert ratings == cache / "movielens" / "ml-100k" / "u.data"
    assert ratings.read_text() == U_DATA
    assert not (ratings.parent / "download.zip").exists()
    archive.unlink()  # a second fetch is served from the cache
    assert movielens.fetch("ml-100k", cache, release) == ratings


def test_fetch_over_http_and_checksum_mismatch_leaves_nothing(tmp_path: Path, server: str) -> None:
    archive, md5 = fake_zip(tmp_path / "www")
    cache = tmp_path / "cache"
    wrong = movielens.Release(server + archive.name, "0" * 32, "ml-100k/u.data")
    with pytest.raises(RecvaeError, match=f"checksum mismatch.*expected MD5 {'0' * 32}, got {md5}"):
        movielens.fetch("ml-100k", cache, wrong)
    assert not (cache / "movielens" / "ml-100k").exists()
    assert list((cache / "movielens").iterdir()) == []  # no temporary directory left behind
    right = movielens.Release(server + archive.name, md5, "ml-100k/u.data")
    assert movielens.fetch("ml-100k", cache, right).read_text() == U_DATA


def test_download_errors_are_clear(tmp_path: Path, server: str) -> None:
    missing = movielens.Release(server + "absent.zip", "0" * 32, "ml-100k/u.data")
    with pytest.raises(RecvaeError, match=r"cannot download .*absent\.zip"):
        movielens.fetch("ml-100k", tmp_path / "cache", missing)
    with pytest.raises(RecvaeError, match="unknown MovieLens data set 'ml-7m'"):
        movielens.fetch("ml-7m", tmp_path / "cache")


def test_ingest_by_name_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, md5 = fake_zip(tmp_path)
    release = movielens.Release(archive.as_uri(), md5, "ml-100k/u.data")
    monkeypatch.setitem(movielens.DATASETS, "ml-100k", release)
    monkeypatch.chdir(tmp_path)
    dataset = ingest(["ml-100k"], IngestOptions(cache_dir=tmp_path / "cache", min_rating=3.5))
    assert dataset.matrix.nnz == 2  # ratings 5 and 4 are above 3.5, the 3 is not
    assert dataset.manifest["sources"][0]["format"] == "movielens"


def test_release_table_points_at_grouplens() -> None:
    assert set(movielens.DATASETS) == {"ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-32m"}
    for name, release in movielens.DATASETS.items():
        assert release.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert len(release.md5) == 32


def test_local_ratings_csv_of_the_newer_releases(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n2,1,4.5,9649\n"
    )
    dataset = ingest([tmp_path / "ratings.csv"], IngestOptions(min_rating=3.5))
    assert dataset.matrix.nnz == 2  # 3.5 itself is not above 3.5
    assert dataset.manifest["sources"][0]["columns"]["user"] == "userId"
