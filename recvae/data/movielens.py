"""MovieLens by name: download from GroupLens once, check the checksum, cache the ratings file.

GroupLens forbids redistribution, so recvae never ships MovieLens: `fetch('ml-1m')` downloads the
official zip into the cache (default ~/.cache/recvae, or $RECVAE_CACHE, or `cache_dir`), checks
its MD5 against the value GroupLens publishes beside each zip (`<name>.zip.md5`), and extracts
only the ratings file. A failed download or a checksum mismatch leaves nothing in the cache.
Without network, download the zip yourself and pass the ratings file's path to `recvae ingest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recvae.errors import RecvaeError
from recvae.io import atomic_dir

BASE_URL = "https://files.grouplens.org/datasets/movielens/"


@dataclass(frozen=True)
class Release:
    """One MovieLens zip: where it is, its published MD5, and the ratings file inside it."""

    url: str
    md5: str
    ratings_member: str  # path inside the zip


DATASETS = {
    "ml-100k": Release(
        BASE_URL + "ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k/u.data"
    ),
    "ml-1m": Release(
        BASE_URL + "ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m/ratings.dat"
    ),
    "ml-20m": Release(
        BASE_URL + "ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m/ratings.csv"
    ),
    "ml-25m": Release(
        BASE_URL + "ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m/ratings.csv"
    ),
    "ml-32m": Release(
        BASE_URL + "ml-32m.zip", "d472be332d4daa821edc399621853b57", "ml-32m/ratings.csv"
    ),
}


def cache_root(cache_dir: Path | None = None) -> Path:
    """`cache_dir`, else $RECVAE_CACHE, else ~/.cache/recvae."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("RECVAE_CACHE", "~/.cache/recvae")).expanduser()


def fetch(name: str, cache_dir: Path | None = None, release: Release | None = None) -> Path:
    """Path of the cached ratings file of MovieLens `name`, downloading it first if needed.

    `release` overrides the official URL and checksum (a mirror, or a test server).
    """
    if release is None:
        if name not in DATASETS:
            raise RecvaeError(
                f"unknown MovieLens data set '{name}'; expected one of {', '.join(DATASETS)}"
            )
        release = DATASETS[name]
    target = cache_root(cache_dir) / "movielens" / name
    ratings = target / Path(release.ratings_member).name
    if ratings.is_file():
        return ratings
    with atomic_dir(target) as tmp:
        archive = tmp / "download.zip"
        md5, sha256 = download(release.url, archive)
        if md5 != release.md5:
            raise RecvaeError(
                f"checksum mismatch for {release.url}: expected MD5 {release.md5}, got {md5}; "
                "the download was deleted and nothing was cached. Retry, or download the zip "
                "yourself and pass the ratings file's path."
            )
        extract_member(archive, release.ratings_member, tmp / ratings.name)
        archive.unlink()
        (tmp / "source.json").write_text(
            json.dumps({"url": release.url, "md5": md5, "sha256": sha256}, indent=2)
        )
    return ratings


def download(url: str, dest: Path) -> tuple[str, str]:
    """Stream `url` into `dest`; returns its MD5 and SHA-256 hex digests."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            for block in iter(lambda: response.read(2**20), b""):
                md5.update(block)
                sha256.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise RecvaeError(
            f"cannot download {url}: {error}. Without network access, download the zip on "
            "another machine and pass the path of its ratings file to `recvae ingest`."
        ) from error
    return md5.hexdigest(), sha256.hexdigest()


def extract_member(archive: Path, member: str, dest: Path) -> None:
    try:
        with (
            zipfile.ZipFile(archive) as zipped,
            zipped.open(member) as src,
            open(dest, "wb") as out,
        ):
            shutil.copyfileobj(src, out, length=2**20)
    except KeyError as error:
        raise RecvaeError(f"{archive}: the zip has no '{member}'") from error
    except zipfile.BadZipFile as error:
        raise RecvaeError(f"{archive}: not a valid zip file ({error})") from error
