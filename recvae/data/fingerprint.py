"""Source fingerprints: enough to tell later whether a dataset was built from the same files.

Hashing a multi-gigabyte log on every nightly run would cost as much as reading it, so large files
are identified by size, modification time and a hash of their first and last MiB; small files
(up to FULL_HASH_LIMIT) are hashed in full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

FULL_HASH_LIMIT = 64 * 2**20
EDGE_BYTES = 2**20


def file_fingerprint(path: Path) -> dict[str, object]:
    """Size, mtime and a sha256 (full for small files, first + last MiB for large ones)."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if stat.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
            scope = "full"
        else:
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(stat.st_size - EDGE_BYTES)
            digest.update(handle.read(EDGE_BYTES))
            scope = "first and last MiB"
    return {
        "size_bytes": stat.st_size,
        "mtime": dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).isoformat(timespec="seconds"),
        "sha256": digest.hexdigest(),
        "sha256_scope": scope,
    }
