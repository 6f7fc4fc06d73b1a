"""The project's packaging promises: one dependency list, typed MLproject entry points."""
import tomllib
from pathlib import Path

import yaml

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
