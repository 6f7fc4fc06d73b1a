"""Finding the data on disk, or downloading the public tarball into a user cache.

Order: an explicit folder, then ``MAMMO_DATA_DIR``, then ``../shared/data/<collection>``
and ``data/<collection>`` next to the project (``microcal`` by default), then the cache
(downloading if the collection has a public download).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mammo_core.config import DataConfig
from mammo_core.errors import DataError

ENV_VAR = "MAMMO_DATA_DIR"


def default_cache_dir() -> Path:
    """Returns the user cache folder for downloaded data (XDG_CACHE_HOME aware)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mammo-tracking"


def resolve_data_root(config: DataConfig, project_root: Path, explicit: str | None = None,
                      cache_dir: Path | None = None, download: bool = True) -> Path:
    """Returns the folder to load images from, downloading the tarball as a last resort.

    An explicit folder (argument, then `config.root`, then MAMMO_DATA_DIR) must exist:
    a typo is an error, never a silent fall-through to other data.
    """
    for source, value in (("argument", explicit), ("data.root", config.root),
                          (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else project_root / path
            if not path.is_dir():
                raise DataError(f"data folder from {source} does not exist: {path}")
            return path
    for candidate in (project_root.parent / "shared" / "data" / config.collection,
                      project_root / "data" / config.collection):
        if candidate.is_dir():
            return candidate
    cache_dir = cache_dir or default_cache_dir()
    extracted = cache_dir / (config.archive_subdir or config.collection)
    if extracted.is_dir():
        return extracted
    if not download or config.download_url is None:
        raise DataError(f"no {config.collection} data found: pass the folder holding it "
                        f"(-P data_dir=... or --data-dir), or set data.root or {ENV_VAR}"
                        + ("" if config.download_url else
                           "; this collection has no public download (see README, 'Studies')"))
    return download_dataset(config.download_url, cache_dir, config.archive_subdir,
                            sha256=config.download_sha256, max_bytes=config.download_max_bytes,
                            into=config.collection)


def download_dataset(url: str, cache_dir: Path, subdir: str, sha256: str | None,
                     max_bytes: int = DataConfig().download_max_bytes,
                     into: str = "data") -> Path:
    """Downloads the tarball at `url`, checks it, extracts `subdir` into `cache_dir`.

    Returns the extracted folder: `cache_dir/subdir`, or `cache_dir/into` when `subdir` is
    "" (an archive whose files lie at its top level, like mini-MIAS). Nothing is extracted unless the download's SHA-256
    equals `sha256`; raises DataError when offline, past `max_bytes`, on another digest
    (or none pinned: the message gives the digest received) or when the archive lacks
    `subdir`.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        archive = Path(tmp) / "download.tar.gz"
        print(f"downloading {url} -> {cache_dir}", file=sys.stderr)
        digest = fetch(url, archive, max_bytes)
        if sha256 is None or digest != sha256.lower():
            raise DataError(
                f"refusing to extract {url}: its SHA-256 is {digest}, "
                + ("but no digest is pinned" if sha256 is None else f"expected {sha256}")
                + "; once the file is known to be right, set data.download_sha256 to its "
                  f"digest, or copy the images to a folder and set {ENV_VAR}")
        extract_subdir(archive, subdir, Path(tmp) / "extracted")
        target = cache_dir / (subdir or into)
        target.parent.mkdir(parents=True, exist_ok=True)
        # extract beside the target, then rename: an interrupted download leaves no half tree
        os.replace(Path(tmp) / "extracted" / subdir, target)
    return target


def fetch(url: str, target: Path, max_bytes: int) -> str:
    """Streams `url` into `target`, at most `max_bytes`; returns the SHA-256 hex digest."""
    digest, total = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DataError(f"{url} is {declared} bytes, larger than the limit of "
                                f"{max_bytes} bytes (data.download_max_bytes)")
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise DataError(f"{url} is larger than the limit of {max_bytes} bytes "
                                    "(data.download_max_bytes); stopped downloading")
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"could not download the data set from {url} ({err}). "
                        f"Offline? Copy the images to a folder and set {ENV_VAR}.") from err
    return digest.hexdigest()


def extract_subdir(archive: Path, subdir: str, destination: Path) -> None:
    """Extracts the members of `archive` under `subdir` into `destination`.

    `subdir` "" extracts every member. Uses tarfile's 'data' filter, so absolute paths and
    links leaving the folder fail.
    """
    prefix = subdir.strip("/") + "/" if subdir.strip("/") else ""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.name.lstrip("./").startswith(prefix)]
            if not members:
                raise DataError(f"archive {archive} has no folder {subdir}" if prefix
                                else f"archive {archive} is empty")
            tar.extractall(destination, members=members, filter="data")
    except tarfile.TarError as err:
        raise DataError(f"archive {archive} is not a readable tarball: {err}") from err
