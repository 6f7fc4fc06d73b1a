"""`./dev.sh server`: the team's MLflow tracking server on PostgreSQL, artifacts over HTTP.

    ./dev.sh server                        # start PostgreSQL + mlflow server on 127.0.0.1:5000
    ./dev.sh server stop                   # stop both; the data stay in .team/
    ./dev.sh server status
    ./dev.sh server migrate mlflow.db      # copy a SQLite store into the running server
    ./dev.sh server start --host 0.0.0.0 --port 5000 --auth   # other hosts; MLflow basic auth

PostgreSQL is the `pgserver` wheel (PostgreSQL 16 binaries from pip, so a fresh machine
with only Python needs nothing else); its data directory is `.team/pgdata` and it listens
on a Unix socket in that directory only, never on a TCP port. `mlflow server` is the one
network endpoint: it writes runs to PostgreSQL and proxies artifacts into
`.team/artifacts`, so clients on other hosts need no shared disk. Data survive restarts.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DATABASE = "mlflow"


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


def start(data: Path, host: str, port: int, auth: bool) -> str:
    """Starts PostgreSQL and `mlflow server` (detached, pid in `data`/server.pid); returns
    the server's URL once /health answers. Raises RuntimeError if it does not come up."""
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    if server_pid(data) is not None and health(url):
        return url
    data.mkdir(parents=True, exist_ok=True)
    start_postgres(data / "pgdata")
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", backend_uri(data / "pgdata"),
               "--artifacts-destination", str(data / "artifacts"),
               "--host", host, "--port", str(port)] + (["--app-name", "basic-auth"] if auth else [])
    with open(data / "server.log", "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=data)
    (data / "server.pid").write_text(str(server.pid))
    deadline = time.monotonic() + 180
    while not health(url):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not come up; see {data / 'server.log'}")
        time.sleep(1)
    return url


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
    parser.add_argument("--auth", action="store_true",
                        help="MLflow's basic-auth app (users and permissions; see README)")
    args = parser.parse_args(argv)
    data, url = args.data.resolve(), f"http://127.0.0.1:{args.port}"
    if args.command == "start":
        url = start(data, args.host, args.port, args.auth)
        print(f"tracking server on {url} (PostgreSQL in {data / 'pgdata'}, artifacts in "
              f"{data / 'artifacts'}); use it with: export MLFLOW_TRACKING_URI={url}")
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
