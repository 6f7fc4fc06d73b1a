"""The documentation as a test: every shell command in the ```bash blocks of README.md and
of the pages it links (DOCS) runs as written.

Commands are extracted in reading order (continuation lines joined, comment lines and
trailing comments dropped) and run one by one with bash in a copy of the project, with the
explicit SUBSTITUTIONS below and nothing else changed. Each must exit 0 and leave no run
RUNNING or FAILED. State carries over as for a user typing them: the environment after
each command (`source`, `export`) is the next one's.

The store they run against starts as a copy of the session's smoke pipeline
(conftest.pipeline_store), which is the README's first command, `./dev.sh run`, on the
smoke config: that command is not run twice, and no other is either. A command another
test runs and checks more closely (the `--resume` line: test_search interrupts a search
and resumes it with it) is listed in NOT_HERE with that test, which must exist; the test
fails if a command is neither run nor listed, so nothing is skipped silently. Servers
(SERVERS) run in the background until they answer their health address, and stay up, one
per port, for the commands that call them (the `curl` lines).

The pages run in GROUPS, one test class each, so that the suite's workers (xdist,
`--dist loadscope`) run groups side by side: each group is a user who starts from the
smoke pipeline's store in a copy of the project of their own and reads its pages in order.
A page whose commands need another's (the explanation `curl` needs the server that
docs/serving.md starts) is in that page's group.
"""
from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from conftest import SMOKE, child_env, copy_store, interrupt_group
from PIL import Image

from serve.ports import port_bindable, port_listening

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# README.md first, then the pages it links, in this order.
DOCS = ("README.md", "docs/shift.md", "docs/serving.md", "docs/explanations.md",
        "docs/search.md", "docs/team.md", "docs/evaluation.md", "docs/studies.md",
        "docs/configuration.md")

# Pages read in one session, in order: a test class each (below); together, every page once.
GROUPS = {"TestReadmeAndStudies": ("README.md", "docs/studies.md", "docs/configuration.md"),
          "TestShiftAndSearch": ("docs/shift.md", "docs/search.md"),
          "TestServingAndExplanations": ("docs/serving.md", "docs/explanations.md"),
          "TestTeamAndEvaluation": ("docs/team.md", "docs/evaluation.md")}

# (documented text, what runs instead): applied to every command, in this order.
SUBSTITUTIONS = (
    # The default searches take 20 minutes or more, the quick ones minutes: the same
    # commands on the smoke config (2 folds x 1 trial x 1 epoch).
    ("experiments/microcal.yaml", SMOKE),
    ("experiments/microcal_quick.yaml", SMOKE),
    ("experiments/wavelet_baselines.yaml", "experiments/wavelet_baselines_quick.yaml"),
    # `curl -s` exits 0 on an HTTP error too: -f makes an error answer fail the command.
    ("curl -s ", "curl -sf "),
    # This test is part of the suite `./dev.sh test` runs: here it only collects.
    ("./dev.sh test", "./dev.sh test --collect-only -q"),
    # Placeholders for the user's own data and ids.
    ("<search run id>", "{search_run}"), ("--search-run <id>", "--search-run {search_run}"),
    ("/data/external_test", "{labelled}"), ("/data/new_patches", "{patches}"),
    ("/data/patches", "{patches}"), ("/data/site_a", "{site}"), ("/data/site_b", "{site}"),
    ("/data/cbis-ddsm-npy", "{cbis}"), ("/data/all-mias", "{mias}"),
    ("models:/mammo-microcal/3", "models:/mammo-microcal/1"),
)

# Whole commands that take the default config implicitly: the same with the quick one.
WHOLE = {
    "python -m tune.baselines": "python -m tune.baselines --config "
                                "experiments/wavelet_baselines_quick.yaml",
    "mlflow run . -e baselines --env-manager local": "mlflow run . -e baselines --env-manager "
                                                     "local -P config=experiments/"
                                                     "wavelet_baselines_quick.yaml",
}

# Long-running servers: (README text, health address, binds with SO_REUSEADDR). Started in
# the background. Serve binds without SO_REUSEADDR, so before one starts the port must be
# out of TIME_WAIT too (serve/server.py); the MLflow UI only needs the last server gone.
SERVERS = (
    ("python -m serve.server", "http://127.0.0.1:8080/healthz", False),
    ("serve run --address local serve/config.yaml", "http://127.0.0.1:8000/healthz", False),
    ("./dev.sh ui", "http://127.0.0.1:5000/health", True),
)

# Commands run by another test instead, and why: each runs once in the suite, where it is
# checked most (the same command after SUBSTITUTIONS, with a free port or an experiment name
# of the test's own). Each reason names that test; test_every_reason_names_a_test checks it.
NOT_HERE = {
    "./dev.sh run": "tests/conftest.py::build_pipeline_store runs it (on the smoke config) "
                    "once per session; this test's store starts as a copy of that store",
    "mlflow run . --env-manager local --experiment-name mammo-microcal":
        "tests/test_tracking_server.py::test_two_users_pipelines_at_once_each_keep_their_own_"
        "run_tree runs this pipeline (on the smoke config, each user with an experiment name "
        "of their own) and checks its run tree",
    "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 mlflow run .":
        "tests/test_tracking_server.py::test_two_users_pipelines_at_once_each_keep_their_own_"
        "run_tree runs this smoke pipeline against a team server it starts, for two users "
        "at once, and checks both run trees",
    "--resume true": "tests/test_search.py::test_sigterm_then_resume_loses_and_duplicates_"
                     "nothing interrupts a smoke search with SIGTERM, runs this command on it "
                     "and checks that the finished fold was reused, not recomputed",
    "-e serve --env-manager local -P model_uri=models:/mammo-microcal@site-":
        "tests/test_recalibrate.py::test_the_site_alias_is_served_by_the_serve_entry_point "
        "serves a site alias with this command and checks the version it loaded",
    "mlflow run . -e serve --env-manager local": "tests/test_server.py::test_an_operator_stop_"
                                                 "releases_the_port_and_finishes_the_run starts "
                                                 "this server (on a free port), scores through "
                                                 "it and stops it four ways",
    "mlflow run . -e train --env-manager local": "tests/test_train_entry.py::test_mlflow_run_"
                                                 "train_finishes_with_metrics_figures_and_model "
                                                 "runs this command on the quick config itself",
    "server migrate mlflow.db": "tests/test_tracking_server.py::test_migrate_resumes_runs_"
                                "twice_and_the_migrated_champion_is_served runs this command "
                                "(killed mid-way, then again) and serves what it copied",
    "-e baselines -P search_run=none": "tests/test_tracking_server.py::test_predict_explain_"
                                       "and_baselines_run_against_the_server runs this command "
                                       "(on the quick baselines config) against a team server",
    "mlflow run . -e evaluate --env-manager local -P data_dir=":
        "tests/test_registry.py::test_evaluate_and_explain_through_mlflow_run_with_the_default_"
        "model_uri runs this command on a labelled folder and checks its run",
    "Studies": "tests/test_studies.py::test_each_study_registers_a_model_under_its_task_name "
               "runs every study's quick pipeline (these commands "
               "among them) on fixtures written in each collection's original layout",
    "mlflow run . -e baselines --env-manager local": "tests/test_baselines_entry.py::test_"
                                                     "every_classifier_is_one_finished_child_of_"
                                                     "one_parent runs this command on the smoke "
                                                     "search",
    "On a Ray cluster": "tests/test_two_nodes.py::test_quick_search_runs_trials_on_both_nodes_"
                        "and_logs_to_the_server: the same head / worker / tracking-server "
                        "commands on two hosts made of network namespaces (the README's "
                        "10.0.0.1 is a real cluster's address, which tests must not reach)",
    "families_quick.yaml": "tests/test_families_search.py::test_every_trial_fold_and_register_"
                           "run_names_its_family runs this search (every family, "
                           "ImageNet backbones included) and checks its run tree",
}


def readme_commands(pages: tuple[str, ...] = DOCS) -> list[tuple[str, str]]:
    """Returns (section title, command) for every command of the `pages`' bash blocks."""
    return [pair for doc in pages for pair in doc_commands(ROOT / doc)]


def doc_commands(path: Path) -> list[tuple[str, str]]:
    """Returns (section title, command) for every command of one page's bash blocks."""
    section, out, block = "", [], None
    for line in path.read_text().splitlines():
        if block is None:
            if line.startswith("#"):
                section = line.lstrip("# ").strip()
            if line.strip() == "```bash":
                block = []
            continue
        if line.strip() == "```":
            out += [(section, c) for c in join_lines(block)]
            block = None
        else:
            block.append(line)
    return out


def join_lines(lines: list[str]) -> list[str]:
    """Returns the block's commands: continuations joined, comments dropped."""
    commands, current = [], ""
    for line in lines:
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            commands.append(strip_comment(current).strip())
            current = ""
    return [c for c in commands if c]


def strip_comment(command: str) -> str:
    """Drops a trailing `  # ...` comment (one whose `#` is outside quotes)."""
    for match in re.finditer(r"\s{2,}#", command):
        before = command[:match.start()]
        if before.count("'") % 2 == 0 and before.count('"') % 2 == 0:
            return before
    return command


def test_the_extraction_finds_every_block_and_joins_continuations():
    linked = set(re.findall(r"\]\((docs/[\w.]+\.md)", (ROOT / "README.md").read_text()))
    assert linked - {"docs/benchmarks.md"} == set(DOCS[1:])  # every page the README links
    commands = [c for _, c in readme_commands()]
    assert "./dev.sh test" in commands and "./dev.sh run" in commands
    assert any(c.startswith("curl -s -X POST http://127.0.0.1:8000/predict -H") and "-d" in c
               for c in commands)
    assert not any(c.endswith("\\") or c.startswith("#") for c in commands)


def test_the_groups_read_every_page_once():
    pages = [page for group in GROUPS.values() for page in group]
    assert sorted(pages) == sorted(DOCS)
    assert set(GROUPS) == {name for name in globals() if name.startswith("Test")}


def test_every_reason_names_a_test_that_exists():
    """A NOT_HERE command is skipped here only because the test its reason names runs it:
    that test (or fixture) must exist, and every key must still match a command."""
    commands = readme_commands()
    for key, reason in NOT_HERE.items():
        assert any(key == section or key in c for section, c in commands), key
        path, name = re.match(r"(tests/\w+\.py)::(\w+)", reason).groups()
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), reason


@pytest.fixture(scope="class")
def workspace(tmp_path_factory, shared_data, pipeline_store) -> tuple[Path, dict[str, str]]:
    """Returns (a copy of the project, the user's environment): a copy of the session's
    pipeline store, the files the README names (patch.png, ...) and folders for the data
    placeholders."""
    tmp = tmp_path_factory.mktemp("readme")
    project = tmp / "project"
    shutil.copytree(ROOT, project, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "mlruns", "mlartifacts", "ray_results", "*.db", "__pycache__",
        "explanations", "*.csv", ".pytest_cache"))
    (project / ".venv").symlink_to(ROOT / ".venv")
    (tmp / "shared").symlink_to(shared_data.parents[1])  # ../shared beside the project
    positives = sorted((shared_data / "1").glob("*.png"))
    shutil.copy(positives[0], project / "patch.png")
    shutil.copy(positives[1], project / "patch1.png")
    Image.open(positives[2]).save(project / "patch2.pgm")
    data = tmp / "data"
    for name, per_class in (("labelled", 6), ("site", 12)):
        for label in ("0", "1"):
            (data / name / label).mkdir(parents=True)
            files = sorted((shared_data / label).glob("*.png"))
            # a site's batch spans its patients: adapt draws whole cases, and 24 patches
            # of the first 3 cases are too few to tell a gain (it refuses them)
            for source in files[::len(files) // per_class][:per_class]:
                shutil.copy(source, data / name / label / source.name)
    (data / "patches").mkdir()
    for source in positives[3:5]:
        shutil.copy(source, data / "patches" / source.name)
    store = copy_store(pipeline_store, tmp / "store")
    env = child_env(f"sqlite:///{store / 'mlflow.db'}", drop=("VIRTUAL_ENV",),
                    MAMMO_RAY_STORAGE=str(store / "ray_results"))
    places = {k: str(data / k) for k in ("labelled", "patches", "site")}
    return project, env | {"__places__": repr(places)}


def substituted(command: str, places: dict[str, str], store: str) -> str:
    command = WHOLE.get(command, command)
    for old, new in SUBSTITUTIONS:
        command = command.replace(old, new)
    if "{search_run}" in command:
        places = places | {"search_run": latest_search(store)}
    for key, value in places.items():
        command = command.replace("{" + key + "}", value)
    return command


def latest_search(uri: str) -> str:
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.mammo.kind = 'search' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def wait_until_free(port: int, reuses_address: bool, timeout: float = 90) -> None:
    """Returns once `port` can be bound again: a stopped server's Ray processes may still
    be letting go of it, and (unless the next server `reuses_address`) connections the
    server closed stay in TIME_WAIT for 60 s, which blocks Serve's sockets (serve/server.py,
    port_bindable). Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (not port_listening("127.0.0.1", port) if reuses_address
                else port_bindable("127.0.0.1", port)):
            return
        time.sleep(0.5)
    raise AssertionError(f"port {port} still taken {timeout} s after its server was stopped")


def answers(url: str) -> bool:
    """Returns True if GET `url` answers 200. This side closes the connection first, so
    that the TIME_WAIT it leaves is this client's, not on the server's port (urllib asks
    the server to close: 60 s of TIME_WAIT there blocked the next server on that port)."""
    address, path = url.split("/", 3)[2], "/" + url.split("/", 3)[3]
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class Shell:
    """Runs commands as a user's bash session would: each sees the environment the
    previous one left (`source`, `export`), in the project folder."""

    def __init__(self, project: Path, env: dict[str, str]):
        self.project, self.env = project, dict(env)
        self.servers: dict[str, subprocess.Popen] = {}
        self.envfile = project.parent / "env.out"

    def run(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
        script = f"{command}\nstatus=$?\nenv -0 > {self.envfile}\nexit $status\n"
        result = subprocess.run(["bash", "-c", script], cwd=self.project, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode == 0 and self.envfile.exists():
            pairs = self.envfile.read_text().split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
        return result

    def serve(self, command: str, health: str, reuses_address: bool,
              timeout: float = 300) -> None:
        """Starts `command` in the background (stopping the server on its port first)
        and returns when `health` answers 200."""
        port = health.split(":")[2].split("/")[0]
        self.stop(port)
        wait_until_free(int(port), reuses_address)
        server = subprocess.Popen(["bash", "-c", command], cwd=self.project,
                                  env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.servers[port] = server
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, f"{command} exited:\n{server.stdout.read()[-3000:]}"
            if answers(health):
                return
            time.sleep(1)
        raise AssertionError(f"{command}: no answer from {health} within {timeout} s")

    def stop(self, port: str | None = None) -> None:
        """Stops the server on `port` (every server if None) as a user would: Ctrl-C."""
        for key in [port] if port else list(self.servers):
            server = self.servers.pop(key, None)
            if server is None:
                continue
            interrupt_group(server)


def run_pages(workspace, pages: tuple[str, ...]) -> None:
    """Runs every command of `pages` in order as one user's session; fails on the first
    that does not exit 0, and if a run is left RUNNING or FAILED."""
    project, env = workspace
    env = dict(env)
    places = eval(env.pop("__places__"))  # noqa: S307 — our own repr of a dict of paths
    store = env["MLFLOW_TRACKING_URI"]
    shell, ran, listed = Shell(project, env), [], []
    try:
        for section, command in readme_commands(pages):
            reason = next((why for key, why in NOT_HERE.items()
                           if key == section or key in command), None)
            if reason:
                listed.append((command, reason))
                continue
            actual = substituted(command, places, store)
            health, reuses = next(((h, r) for key, h, r in SERVERS if key in command),
                                  (None, False))
            started = time.monotonic()
            if health:
                shell.serve(actual, health, reuses)
            else:
                result = shell.run(actual)
                assert result.returncode == 0, (
                    f"README command failed ({section}): {command}\nran: {actual}\n"
                    f"{(result.stdout + result.stderr)[-3000:]}")
            ran.append(command)
            print(f"{time.monotonic() - started:6.1f} s  {command}", flush=True)
    finally:
        shell.stop()
    assert len(ran) + len(listed) == len(readme_commands(pages))
    assert not unfinished_runs(store)


def unfinished_runs(store: str, timeout: float = 60) -> list[tuple[str, str]]:
    """Returns (name, status) of the store's RUNNING or FAILED runs once none is left, or
    after `timeout` seconds: a stopped `serve` run is FINISHED again only a moment after
    its `mlflow run` has exited (serve/server.py, keep_finished_after)."""
    client = mlflow.MlflowClient(store)
    deadline = time.monotonic() + timeout
    while True:
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs, "no run in the store"
        left = [(r.info.run_name, r.info.status) for r in runs
                if r.info.status in ("RUNNING", "FAILED")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


class PageGroup:
    """One group of pages (GROUPS, by the subclass's name) as one user's session."""

    @pytest.mark.timeout(1200)
    def test_every_command_runs_as_written(self, workspace):
        run_pages(workspace, GROUPS[type(self).__name__])


class TestReadmeAndStudies(PageGroup):
    pass


class TestShiftAndSearch(PageGroup):
    pass


class TestServingAndExplanations(PageGroup):
    pass


class TestTeamAndEvaluation(PageGroup):
    pass
