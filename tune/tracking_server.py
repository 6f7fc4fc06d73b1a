"""`./dev.sh server`: the team's MLflow tracking server on PostgreSQL, artifacts over HTTP.

    ./dev.sh server                        # start PostgreSQL + mlflow server on 127.0.0.1:5000
    ./dev.sh server stop                   # stop both; the data stay in .team/
    ./dev.sh server status
    ./dev.sh server migrate mlflow.db      # copy a SQLite store into the running server
    ./dev.sh server start --host 10.0.0.1 --port 5000 --auth  # other hosts: auth required

PostgreSQL is the `pgserver` wheel (PostgreSQL 16 binaries from pip, so a fresh machine
with only Python needs nothing else); its data directory is `.team/pgdata` and it listens
on a Unix socket in that directory only, never on a TCP port. `mlflow server` is the one
network endpoint: it writes runs to PostgreSQL and proxies artifacts into
`.team/artifacts`, so clients on other hosts need no shared disk. Data survive restarts.

A server reachable from other hosts runs MLflow's basic-auth app, or does not start: anyone
who can register a version and move `@champion` chooses the code Serve runs. With `--auth`
the first start creates a random admin password (`.team/auth/admin_password`, mode 0600,
printed once); MLflow's default admin password is never used.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from serve.host import usable_cpus

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DATABASE = "mlflow"
ADMIN = "admin"
AUTH_CACHE_S = 30
MLFLOW_DEFAULT_WORKERS = 4


def backend_uri(pgdata: Path) -> str:
    """Returns the SQLAlchemy URI of the server's database (Unix socket in `pgdata`)."""
    return f"postgresql+psycopg2://postgres@/{DATABASE}?host={pgdata}"


def start_postgres(pgdata: Path) -> None:
    """Starts PostgreSQL on `pgdata` (initialising it the first time) and creates the
    MLflow database if missing; the server keeps running after this process exits."""
    import pgserver  # imported here: only the server commands need it

    server = pgserver.get_server(pgdata, cleanup_mode=None)
    if DATABASE not in server.psql(f"SELECT datname FROM pg_database WHERE datname = '{DATABASE}';"):
        server.psql(f"CREATE DATABASE {DATABASE};")


def stop_postgres(pgdata: Path) -> None:
    """Stops the PostgreSQL server on `pgdata` (its data stay)."""
    import pgserver

    pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()


def health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def loopback(host: str) -> bool:
    """Returns whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it resolves to whatever the network says
        return False


def secret(path: Path) -> tuple[str, bool]:
    """Returns (the secret stored in `path`, whether it was created now): a random one
    written with mode 0600 the first time."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(value + "\n")
    return value, True


def auth_environment(data: Path) -> tuple[dict[str, str], str | None]:
    """Returns (the environment of MLflow's basic-auth app, the admin password if it was
    created now, else None). Users and permissions live in `data`/auth/basic_auth.db."""
    folder = data / "auth"
    password, created = secret(folder / "admin_password")
    flask_key, _ = secret(folder / "flask_secret_key")
    config = folder / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
                      f"admin_username = {ADMIN}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      # MLflow hashes the password (PBKDF2) on every request otherwise:
                      # measured 242 ms a logged metric; a changed or deleted credential
                      # then stays valid up to this long on the server's other workers
                      f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n")
    config.chmod(0o600)
    # the password goes to the server by environment, never into a file others may read
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key}, password if created else None


def server_environment() -> dict[str, str]:
    """Returns what `mlflow server` gets on top of this environment: MLflow's job runner
    off unless the user turned it on. It runs GenAI jobs (scorers, prompt optimisation)
    that no entry point here submits, and it is a runner plus seven huey consumers: on
    2 cores it doubled the server's start-up CPU (20.6 CPU-s against 10.4 with 4 workers)
    and kept 0.23 of a core busy while idle (0.008 without it;
    benchmarks/server_start_bench.py)."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
            os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}


def default_workers() -> int:
    """Returns the server's worker processes: one per usable CPU, at most MLflow's default
    of 4 (each is a full copy of the server: about 2 CPU-s to start,
    benchmarks/server_start_bench.py)."""
    return max(1, min(usable_cpus(), MLFLOW_DEFAULT_WORKERS))


def start(data: Path, host: str, port: int, auth: bool,
          workers: int | None = None) -> tuple[str, str | None]:
    """Starts PostgreSQL and `mlflow server` with `workers` processes (None: one per usable
    CPU, at most 4) detached, pid in `data`/server.pid; returns (the server's URL once
    /health answers, the admin password if created by this start). Raises RuntimeError if
    it does not come up."""
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    if server_pid(data) is not None and health(url):
        return url, None
    data.mkdir(parents=True, exist_ok=True)
    start_postgres(data / "pgdata")
    env, password = auth_environment(data) if auth else ({}, None)
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", backend_uri(data / "pgdata"),
               "--artifacts-destination", str(data / "artifacts"),
               "--host", host, "--port", str(port), "--workers", str(workers or default_workers())
               ] + (["--app-name", "basic-auth"] if auth else [])
    with open(data / "server.log", "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=data,
                                  env=os.environ | server_environment() | env)
    (data / "server.pid").write_text(str(server.pid))
    deadline = time.monotonic() + 180
    while not health(url):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not come up; see {data / 'server.log'}")
        time.sleep(1)
    return url, password


def server_pid(data: Path) -> int | None:
    """Returns the pid of the running mlflow server started here, or None."""
    try:
        pid = int((data / "server.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop(data: Path) -> None:
    """Stops `mlflow server` (its whole process group: it runs worker processes) and
    PostgreSQL; the data stay."""
    pid = server_pid(data)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while server_pid(data) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if server_pid(data) is not None:
            os.killpg(pid, signal.SIGKILL)
    (data / "server.pid").unlink(missing_ok=True)
    if (data / "pgdata" / "postmaster.pid").exists():
        stop_postgres(data / "pgdata")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="start",
                        choices=["start", "stop", "status", "migrate"])
    parser.add_argument("source", nargs="?", help="migrate: the SQLite file to copy")
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT / ".team",
                        help="PostgreSQL data, artifacts, log and pid file")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 only on purpose")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=None,
                        help="server processes (default: one per usable CPU, at most 4)")
    parser.add_argument("--auth", action="store_true",
                        help="MLflow's basic-auth app (users and permissions; docs/team.md); "
                             "required for any --host other than loopback")
    args = parser.parse_args(argv)
    data, url = args.data.resolve(), f"http://127.0.0.1:{args.port}"
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers {args.workers}: the server needs at least one worker")
    if args.command == "start" and not loopback(args.host) and not args.auth:
        parser.error(f"--host {args.host} would let anyone on the network register models and "
                     "move @champion, whose code Serve then runs: add --auth (MLflow's "
                     "basic-auth app), or keep the default 127.0.0.1")
    if args.command == "start":
        url, password = start(data, args.host, args.port, args.auth, args.workers)
        print(f"tracking server on {url} (PostgreSQL in {data / 'pgdata'}, artifacts in "
              f"{data / 'artifacts'}); use it with: export MLFLOW_TRACKING_URI={url}")
        if args.auth:
            print(f"basic auth on: clients set MLFLOW_TRACKING_USERNAME and "
                  f"MLFLOW_TRACKING_PASSWORD; the admin is {ADMIN!r}, password in "
                  f"{data / 'auth' / 'admin_password'} (mode 0600)")
        if password:
            print(f"admin password (created now, shown once): {password}")
    elif args.command == "stop":
        stop(data)
        print(f"stopped the tracking server and PostgreSQL; data kept in {data}")
    elif args.command == "status":
        running = server_pid(data) is not None and health(url)
        print(f"tracking server {'running on ' + url if running else 'not running'}")
        return 0 if running else 1
    else:
        if not args.source:
            parser.error("migrate needs the SQLite file: ./dev.sh server migrate mlflow.db")
        from tune.migrate import migrate_store
        print(migrate_store(f"sqlite:///{Path(args.source).resolve()}", url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
