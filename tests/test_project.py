"""The project's packaging promises: one dependency list, typed MLproject entry points."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import child_env

ROOT = Path(__file__).resolve().parents[1]


def test_conda_yaml_mirrors_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert [p for p in pip_section if p != "-e ."] == declared
    assert "python=3.11" in conda["dependencies"]


def test_every_entry_point_takes_a_typed_config():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    assert {"main", "train"} <= set(project["entry_points"])
    own_config = {"baselines": "experiments/wavelet_baselines.yaml"}  # a study of its own
    for name, entry in project["entry_points"].items():
        config = entry["parameters"]["config"]
        assert config["type"] and config["default"] == own_config.get(
            name, "experiments/microcal.yaml"), name
        assert (ROOT / config["default"]).is_file()


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./dev.sh test" in readme and "./dev.sh run" in readme
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()


def entry_point_parameters() -> list[tuple[str, dict[str, str]]]:
    """Returns (entry point, {parameter: how it reaches the program}) from the MLproject:
    "--flag" for a command-line option, "$VAR" for an environment variable."""
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    out = []
    for name, entry in project["entry_points"].items():
        command = entry["command"]
        passed = {param: flag for flag, param in re.findall(r"(--[\w-]+) \{(\w+)\}", command)}
        passed |= {param: f"${var}" for var, param in re.findall(r"(\w+)=\{(\w+)\}", command)}
        assert set(passed) == set(entry["parameters"]), name  # every parameter reaches it
        out.append((name, {p: how for p, how in passed.items()
                           if entry["parameters"][p].get("type", "string") in ("string", "path")}))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("entry, params", entry_point_parameters(),
                         ids=[name for name, _ in entry_point_parameters()])
def test_parameter_values_reach_each_entry_point_verbatim_and_never_run(entry, params, tmp_path):
    """A value with a space, both quotes and $(...) through the real `mlflow run`: the
    program (a stand-in `python` that records what it got) sees it byte for byte, and the
    command substitution never runs."""
    marker = tmp_path / "pwned"
    value = f"{tmp_path}/a b'c\"d$(touch {marker})`touch {marker}`;x"
    Path(value).mkdir(parents=True)  # `path` parameters must exist
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "open(os.environ['ARGV_LOG'], 'w').write(json.dumps("
        "{'argv': sys.argv[1:], 'env': dict(os.environ)}))\n")
    (shim / "python").chmod(0o755)
    env = child_env(f"sqlite:///{tmp_path / 'mlflow.db'}", ARGV_LOG=str(tmp_path / "argv.json"))
    env["PATH"] = f"{shim}:{env['PATH']}"
    args = [a for p in params for a in ("-P", f"{p}={value}")]
    result = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", ".", "-e", entry,
                             "--env-manager", "local", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads((tmp_path / "argv.json").read_text())
    for param, how in params.items():
        if how.startswith("$"):
            assert got["env"][how[1:]] == value, param
        else:
            assert got["argv"][got["argv"].index(how) + 1] == value, param
    assert not marker.exists()


@pytest.mark.slow
def test_an_injected_data_dir_reaches_the_real_evaluate_as_text(tmp_path):
    marker = tmp_path / "pwned"
    value = f"{tmp_path}/no such 'folder' $(touch {marker})"
    env = child_env(f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = subprocess.run(["mlflow", "run", ".", "-e", "evaluate", "--env-manager", "local",
                             "-P", f"data_dir={value}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"data folder from argument does not exist: {value}" in result.stderr
    assert not marker.exists()
