import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import make_dataset
from mammo_core.config import DataConfig
from mammo_core.data import load_dataset
from mammo_core.errors import DataError
from mammo_core.sources import download_dataset, extract_subdir, resolve_data_root

SUBDIR = "IMAGES/Mammography_micro"


def original_tarball(tmp_path: Path) -> Path:
    """Builds a tarball in the original layout: IMAGES/Mammography_micro/{Train,Test}/{0,1}/*.pgm."""
    source = tmp_path / "src"
    make_dataset(source / SUBDIR / "Train", suffix=".pgm", seed=1)
    make_dataset(source / SUBDIR / "Test", n_per_class=2, suffix=".pgm", seed=2)
    (source / "IMAGES" / "Other_course_data").mkdir(parents=True)
    (source / "IMAGES" / "Other_course_data" / "readme.txt").write_text("not ours")
    archive = tmp_path / "DL_class_data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "IMAGES", arcname="IMAGES")
    return archive


def test_download_and_extract_the_original_layout(tmp_path, data_config):
    archive = original_tarball(tmp_path)
    cache = tmp_path / "cache"
    root = download_dataset(archive.as_uri(), cache, SUBDIR, sha256=sha256(archive))
    assert root == cache / SUBDIR
    assert not (cache / "IMAGES" / "Other_course_data").exists()
    dataset = load_dataset(root, data_config)
    assert len(dataset.labels) == 12 and set(dataset.partitions) == {"Train", "Test"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("pinned", [None, "0" * 64])
def test_a_download_whose_digest_is_not_the_pinned_one_is_never_extracted(tmp_path, pinned):
    archive = original_tarball(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"SHA-256 is {sha256(archive)}.*download_sha256"):
        download_dataset(archive.as_uri(), cache, SUBDIR, sha256=pinned)
    assert not (cache / SUBDIR).exists() and list(cache.iterdir()) == []  # temp folder gone


def test_a_download_over_the_size_limit_stops_before_extraction(tmp_path):
    archive = original_tarball(tmp_path)
    cache = tmp_path / "cache"
    config = DataConfig(download_url=archive.as_uri(), download_sha256=sha256(archive),
                        download_max_bytes=archive.stat().st_size - 1)
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(DataError, match="larger than the limit.*download_max_bytes"):
        resolve_data_root(config, project, cache_dir=cache)
    assert not (cache / SUBDIR).exists()


def test_a_body_without_a_length_is_cut_at_the_limit_while_it_streams(tmp_path):
    archive = original_tarball(tmp_path)
    payload = archive.read_bytes()

    class NoLength(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # HTTP/1.0 without Content-Length: the body ends at close
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoLength)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/DL_class_data.tar.gz"
    try:
        with pytest.raises(DataError, match="larger than the limit of 1000 bytes"):
            download_dataset(url, tmp_path / "cache", SUBDIR, sha256=sha256(archive),
                             max_bytes=1000)
        root = download_dataset(url, tmp_path / "cache", SUBDIR, sha256=sha256(archive))
        assert root == tmp_path / "cache" / SUBDIR
    finally:
        server.shutdown()
        server.server_close()


def test_resolve_downloads_only_as_last_resort(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA_DIR", raising=False)
    archive = original_tarball(tmp_path)
    config = DataConfig(download_url=archive.as_uri(), download_sha256=sha256(archive))
    project = tmp_path / "project"
    project.mkdir()
    cache = tmp_path / "cache"
    root = resolve_data_root(config, project, cache_dir=cache)
    assert root == cache / SUBDIR
    # second call: the cache is used, nothing is downloaded again
    archive.unlink()
    assert resolve_data_root(config, project, cache_dir=cache) == root


def test_offline_download_message(tmp_path):
    with pytest.raises(DataError, match="could not download.*MAMMO_DATA_DIR"):
        download_dataset((tmp_path / "missing.tar.gz").as_uri(), tmp_path / "cache", SUBDIR,
                         sha256=None)


def test_archive_without_the_folder(tmp_path):
    archive = tmp_path / "other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match="has no folder"):
        extract_subdir(archive, SUBDIR, tmp_path / "out")


def test_archive_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(f"{SUBDIR}/../../../../escape.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises((DataError, tarfile.TarError, OSError)):
        extract_subdir(archive, SUBDIR, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_order_explicit_then_env_then_shared(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "data" / "microcal").mkdir(parents=True)
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir(), env.mkdir()
    monkeypatch.setenv("MAMMO_DATA_DIR", str(env))
    config = DataConfig()
    assert resolve_data_root(config, project, explicit=str(explicit)) == explicit
    assert resolve_data_root(config, project) == env
    monkeypatch.delenv("MAMMO_DATA_DIR")
    assert resolve_data_root(config, project) == project / "data" / "microcal"
    (tmp_path / "shared" / "data" / "microcal").mkdir(parents=True)
    assert resolve_data_root(config, project) == tmp_path / "shared" / "data" / "microcal"


def test_explicit_folder_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="MAMMO_DATA_DIR does not exist"):
        resolve_data_root(DataConfig(), tmp_path)


def test_a_collection_with_its_files_at_the_archive_top_level(tmp_path, monkeypatch):
    """mini-MIAS' tarball holds mdbNNN.pgm and Info.txt at its top level."""
    from collection_fixtures import write_mias

    monkeypatch.delenv("MAMMO_DATA_DIR", raising=False)
    source = write_mias(tmp_path / "src", women=4)
    archive = tmp_path / "all-mias.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=path.name)
    config = DataConfig(collection="mias", layout="mias", image_size=(64, 64),
                        download_url=archive.as_uri(), download_sha256=sha256(archive),
                        archive_subdir="")
    (tmp_path / "project").mkdir()
    root = resolve_data_root(config, tmp_path / "project", cache_dir=tmp_path / "cache")
    assert root == tmp_path / "cache" / "mias"
    assert len(load_dataset(root, config).labels) == 9  # mdb001 .. mdb009


def test_a_collection_without_a_public_download_says_where_to_point(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA_DIR", raising=False)
    config = DataConfig(collection="cbis-ddsm-npy", download_url=None)
    (tmp_path / "project" / "data" / "cbis-ddsm-npy").mkdir(parents=True)
    assert resolve_data_root(config, tmp_path / "project") == (
        tmp_path / "project" / "data" / "cbis-ddsm-npy")
    with pytest.raises(DataError, match="no cbis-ddsm-npy data found.*no public download"):
        resolve_data_root(config, tmp_path / "other", cache_dir=tmp_path / "cache")
