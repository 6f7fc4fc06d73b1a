"""A local Ray node must listen on the loopback interface only."""
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import tune  # first: it decides the binding, which ray reads once when imported
import os, ray
from tune.cluster import start_ray
print(start_ray())
ray.get(ray.remote(lambda: 1).remote())
print("SESSION", ray._private.worker._global_node.get_session_dir_path())
print("MLFLOW_RUN_ID" in os.environ)
"""


def listening_addresses(pids: set[int]) -> set[str]:
    """Returns the local addresses of LISTEN TCP sockets owned by `pids` (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                found.add(decode(fields[1].split(":")[0], width))
    return found


def decode(hex_ip: str, width: int) -> str:
    raw = bytes.fromhex(hex_ip)
    # /proc stores each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback
    return str(mapped or address)


def ray_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\\0", b" ")
            except OSError:
                continue
            if any(key in cmd for key in (b"ray::", b"gcs_server", b"raylet", b"ray/_private")):
                pids.add(int(entry))
    return pids


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only():
    env = child_env(MLFLOW_RUN_ID="must-not-reach-workers")
    before = ray_pids()  # another Ray on this machine (a benchmark, say) is not ours
    process = subprocess.Popen([sys.executable, "-i", "-c", SCRIPT], cwd=ROOT, env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # Ray's logs would fill a pipe
    try:
        lines = [process.stdout.readline().strip() for _ in range(3)]
        assert lines[0].startswith("ray: local node on 127.0.0.1"), lines
        assert lines[2] == "False"  # MLFLOW_RUN_ID was removed before workers started
        bound = listening_addresses(ray_pids() - before)
    finally:
        try:
            process.communicate("import ray; ray.shutdown()\n", timeout=120)
        finally:
            process.kill()
    assert bound, "no listening socket found for the Ray processes"
    assert bound <= {"127.0.0.1", "::1"}, bound
