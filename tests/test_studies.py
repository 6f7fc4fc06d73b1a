"""Every study's quick pipeline, end to end, on a fixture in its collection's original layout:
`mlflow run . -P config=experiments/<study>_quick.yaml -P data_dir=<fixture>`, then the
registered model under the task's name, scored by its pyfunc and by Ray Serve over HTTP."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from collection_fixtures import write_cbis_arrays, write_cbis_folders, write_mias
from conftest import runs_of, search_env, stop_serving, use_store
from dicom_fixtures import write_cbis_archive
from PIL import Image
from ray import serve
from test_families_search import free_port, post

from mammo_core.config import load_experiment
from mammo_core.data import load_dataset
from mammo_core.predictor import probabilities_of
from serve.server import deploy
from serve.settings import ServeSettings
from tune.cluster import start_ray

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# study -> the fixture folder it reads (a key of `collections`)
STUDIES = {"cbis_mass_vs_calc": "cbis_npy", "cbis_benign_vs_malignant": "cbis_npy",
           "cbis_5class": "cbis_npy", "cbis_siamese_mass_vs_calc": "cbis_npy",
           "cbis_folders_mass_vs_calc": "cbis_folders", "mias_normal_vs_abnormal": "mias",
           "mias_roi_patches": "mias", "cbis_dicom_mass_vs_calc": "cbis_dicom",
           "cbis_dicom_benign_vs_malignant": "cbis_dicom", "cbis_dicom_whole": "cbis_dicom"}


@pytest.fixture(scope="module")
def collections(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("collections")
    return {"cbis_npy": write_cbis_arrays(root / "cbis_npy"),
            "cbis_folders": write_cbis_folders(root / "cbis_folders"),
            "mias": write_mias(root / "mias", women=16),
            "cbis_dicom": write_cbis_archive(root / "cbis_dicom")}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, collections) -> dict[str, Path]:
    """Every study's quick pipeline run, each in a store of its own: two at a time (much of
    a short pipeline is process start-up and waiting, which two runs overlap)."""
    folder = tmp_path_factory.mktemp("studies")

    def pipeline(study: str) -> Path:
        store = folder / study
        store.mkdir()
        result = subprocess.run(
            ["mlflow", "run", ".", "--env-manager", "local",
             "-P", f"config=experiments/{study}_quick.yaml",
             "-P", f"data_dir={collections[STUDIES[study]]}"],
            cwd=ROOT, env=search_env(store), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (study, (result.stdout + result.stderr)[-3000:])
        assert f"{study} v1 @champion" in result.stdout, study
        return store

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(STUDIES, pool.map(pipeline, STUDIES)))


def every_run(stores: dict[str, Path]) -> list:
    return [run for store in stores.values() for run in runs_of(store)]


def test_each_study_registers_a_model_under_its_task_name(stores):
    runs = every_run(stores)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    for study, store in stores.items():
        uri = f"sqlite:///{store / 'mlflow.db'}"
        client = mlflow.MlflowClient(uri, registry_uri=uri)  # not what an earlier test set
        assert str(client.get_model_version_by_alias(study, "champion").version) == "1"
    searches = [(store, r) for store in stores.values() for r in runs_of(store)
                if r.data.tags.get("mammo.kind") == "search"]
    assert len(searches) == len(STUDIES)
    for store, search in searches:  # the data exploration every study's search logs
        client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
        figures = {a.path for a in client.list_artifacts(search.info.run_id, "figures")}
        assert {"figures/data_examples.png", "figures/data_histograms.png",
                "figures/data_part_labels.png"} <= figures
        counts = client.download_artifacts(search.info.run_id, "data/part_labels.csv",
                                           str(store))
        header = Path(counts).read_text().splitlines()[0]
        assert header == ("part,0,1,2,3,4" if "5class" in search.data.tags["mlflow.runName"]
                          else "part,0,1")


def test_class_balancing_is_logged_with_the_config(stores):
    searches = {r.data.tags["mlflow.runName"]: r for r in every_run(stores)
                if r.data.tags.get("mammo.kind") == "search"}
    balance = {name: run.data.params.get("training.class_balance")
               for name, run in searches.items()}
    assert balance["search-cbis-benign-vs-malignant-quick"] == "class_weight"
    assert balance["search-mias-roi-patches-quick"] == "oversample"


def test_pyfunc_and_rest_answers_agree_for_every_study(stores, collections):
    mp = pytest.MonkeyPatch()
    port = free_port()
    start_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for study, collection in STUDIES.items():
            store = stores[study]
            use_store(store, mp)
            pixels, files = study_inputs(study, collections[collection])
            expected = mlflow.pyfunc.load_model(f"models:/{study}/1").predict(pixels)
            deploy(ServeSettings(model_uri=f"models:/{study}@champion", port=port,
                                 tracking_uri=f"sqlite:///{store / 'mlflow.db'}"))
            body = json.dumps(request_body(files))
            answer = post(f"http://127.0.0.1:{port}/predict", body.encode())
            assert answer["model"]["name"] == study
            np.testing.assert_allclose(rest_probabilities(answer), probabilities_of(expected),
                                       atol=1e-5, err_msg=study)
            assert [p["label"] for p in answer["predictions"]] == expected["label"].tolist()
            check_invocations(port, study, pixels)
            if study in ("cbis_dicom_mass_vs_calc", "cbis_dicom_whole"):
                check_dicom_requests(port, files[0], answer["predictions"][0]["probability"])
            if study == "cbis_siamese_mass_vs_calc":  # a pair is explained side by side
                one = json.dumps(request_body(files[:1])).encode()
                explained = post(f"http://127.0.0.1:{port}/explain?method=gradcam", one)
                assert np.array(explained["heatmap"]).shape == (48, 96)
    finally:
        stop_serving()
        mp.undo()


def check_invocations(port: int, study: str, pixels: np.ndarray) -> None:
    """MLflow's scoring route answers the pyfunc's rows for what `mlflow models serve`
    would hand it: the JSON array as parsed (integers as int64, read at the training depth)."""
    sent = json.loads(json.dumps({"inputs": pixels.tolist()}))
    expected = mlflow.pyfunc.load_model(f"models:/{study}/1").predict(np.asarray(sent["inputs"]))
    answer = post(f"http://127.0.0.1:{port}/invocations", json.dumps(sent).encode())
    got = pd.DataFrame(answer["predictions"])
    assert list(got.columns) == list(expected.columns), study
    np.testing.assert_allclose(got.to_numpy(float), expected.to_numpy(float), atol=1e-5,
                               err_msg=study)


def request_body(files: list) -> dict:
    """Returns {"images": [base64]} or, for pairs of files, {"pairs": [[base64, base64]]}."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()
    if isinstance(files[0], list):
        return {"pairs": [[b64(a), b64(b)] for a, b in files]}
    return {"images": [b64(f) for f in files]}


def rest_probabilities(answer: dict) -> np.ndarray:
    """Returns the answer's probabilities: (N,) binary, (N, K) from {"probabilities": {...}}."""
    rows = answer["predictions"]
    if "probability" in rows[0]:
        return np.array([row["probability"] for row in rows])
    return np.array([list(row["probabilities"].values()) for row in rows])


def test_a_model_of_five_classes_answers_per_class(stores, monkeypatch):
    store = stores["cbis_5class"]
    client = use_store(store, monkeypatch)
    card = client.get_model_version("cbis_5class", "1").description
    assert "| calcification malignant |" in card and "balanced_accuracy" in card
    (search,) = [r for r in runs_of(store) if r.data.tags.get("mlflow.runName")
                 == "search-cbis-5class-quick"]
    assert {f"cv_test_auc_{k}_mean" for k in range(5)} <= set(search.data.metrics)
    frame = mlflow.pyfunc.load_model("models:/cbis_5class/1").predict(
        np.zeros((2, 48, 48), np.uint16))
    assert [c for c in frame.columns if c.startswith("probability.")] == [
        "probability.baseline", "probability.mass benign", "probability.mass malignant",
        "probability.calcification benign", "probability.calcification malignant"]
    np.testing.assert_allclose(probabilities_of(frame).sum(axis=1), 1, atol=1e-5)


def study_inputs(study: str, root: Path) -> tuple[np.ndarray, list]:
    """Returns (patches as the pyfunc takes them, the same images as files for REST).

    CBIS patches go as 16-bit PNGs; whole MIAS mammograms go as their original 1024x1024
    PGM files, and CBIS DICOM crops and full fields as their DICOM files, which the study
    (and so Serve) downscales like the loader did.
    """
    experiment = load_experiment(ROOT / "experiments" / f"{study}_quick.yaml")
    dataset = load_dataset(root, experiment.data)
    if study in ("mias_normal_vs_abnormal", "cbis_dicom_mass_vs_calc", "cbis_dicom_whole"):
        paths = [Path(p) for p in dataset.paths[:3]]
        return dataset.images[:3], [p.read_bytes() for p in paths]
    stored = dataset.stored_pixels()[:3]
    if dataset.images.ndim == 4:  # (baseline, abnormal) pairs: REST takes {"pairs": ...}
        return stored, [[png(patch) for patch in pair] for pair in stored]
    return stored, [png(image) for image in stored]


def check_dicom_requests(port: int, dicom_file: bytes, expected: float) -> None:
    """One DICOM file as the body (application/dicom) and as a multipart part scores as
    the base64 one did; a corrupt one, or one of an unsupported syntax, is a 400 naming it."""
    url = f"http://127.0.0.1:{port}/predict"
    as_body = post(url, dicom_file, content_type="application/dicom")
    assert as_body["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-6)
    boundary = "mammo-boundary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"scan.dcm\"\r\nContent-Type: application/dicom\r\n\r\n"
                 ).encode() + dicom_file + f"\r\n--{boundary}--\r\n".encode()
    parts = post(url, multipart, content_type=f"multipart/form-data; boundary={boundary}")
    assert parts["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-6)
    for broken in (dicom_file[:len(dicom_file) // 2], dicom_file[:132] + b"\x00" * 300):
        status, text = post_status(url, broken, "application/dicom")
        assert status == 400 and "DICOM" in text, (status, text)


def post_status(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    """Returns (HTTP status, body text) of a POST expected to fail."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("study, broken", [
    ("cbis_mass_vs_calc", "empty"), ("cbis_mass_vs_calc", "odd_pair"),
    ("mias_normal_vs_abnormal", "bad_info_line"), ("mias_roi_patches", "missing_image"),
    ("cbis_dicom_mass_vs_calc", "missing_crop")])
def test_a_malformed_collection_is_one_line_and_no_run_left_running(tmp_path, study, broken):
    data = tmp_path / "data"
    if broken == "odd_pair":
        write_cbis_arrays(data, {"train": 4})
        labels = np.load(data / "train_labels.npy")
        labels[2] = 3  # a baseline slot holding an abnormal label
        np.save(data / "train_labels.npy", labels)
    elif broken == "missing_crop":
        write_cbis_archive(data, patients=6, real=False)
        crop = next(p for p in data.rglob("*.dcm") if "P_01001_LEFT_MLO_1" in str(p)
                    and "cropped images" in str(p))
        crop.unlink()
    elif broken in ("bad_info_line", "missing_image"):
        write_mias(data, women=6)
        if broken == "bad_info_line":
            with open(data / "Info.txt", "a") as info:
                info.write("\r\nmdb012 X NORM\r\n")
        else:
            (data / "mdb004.pgm").unlink()
    else:
        data.mkdir()
    result = subprocess.run([sys.executable, "-m", "tune.search",
                             "--config", f"experiments/{study}_quick.yaml", "--data-dir", str(data)],
                            cwd=ROOT, env=search_env(tmp_path), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    expected = {"empty": "_images.npy", "odd_pair": "train_labels.npy: pair 1",
                "bad_info_line": "Info.txt, line", "missing_image": "mdb004.pgm",
                "missing_crop": "the archive and its CSVs disagree"}[broken]
    assert expected in line
    if (tmp_path / "mlflow.db").exists():  # the data is read before any run starts
        assert all(r.info.status != "RUNNING" for r in runs_of(tmp_path))
