"""What a test run leaves behind: the processes it started and the ports it bound.

Every process the session starts inherits one environment variable (set in tests/conftest.py
before anything starts), whoever its parent is by the time we look: Ray's raylet and workers,
Serve replicas, a vLLM EngineCore whose parent died, a CLI subprocess. Reading
/proc/<pid>/environ finds them all, orphans included, which a walk of the process tree would
miss (an orphan is re-parented to init).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

TAG = "LOOKAHEAD_TEST_SESSION"


@dataclass(frozen=True)
class Proc:
    pid: int
    cmdline: str

    def __str__(self) -> str:
        return f"{self.pid} {self.cmdline[:160]}"


def session_tag() -> str:
    """This session's tag (set by tests/conftest.py before anything starts)."""
    return os.environ[TAG]


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def orphaned(p: Proc, root: int | None = None) -> bool:
    """True when the process does not descend from `root` (this process): its starter died
    without stopping it (an engine core outliving its replica, a CLI's Ray after the CLI)."""
    root = os.getpid() if root is None else root
    pid, seen = p.pid, 0
    while pid > 1 and seen < 64:
        pid = parent(pid)
        if pid == root:
            return False
        seen += 1
    return True


def ends_with_us(p: Proc) -> bool:
    """multiprocessing's resource tracker, started by this process for its spawned children (vLLM's
    engine cores): it lives until this process exits, by design, and then exits on its own."""
    return parent(p.pid) == os.getpid() and "multiprocessing.resource_tracker" in p.cmdline


def replica_of(p: Proc) -> str | None:
    """The Serve application a replica process belongs to (its title is ray::ServeReplica:<app>:<deployment>)."""
    if "ServeReplica:" not in p.cmdline:
        return None
    return p.cmdline.split("ServeReplica:", 1)[1].split(":", 1)[0]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\x00", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _tagged(pid: int, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:  # gone, or not ours
        return False
    return f"{TAG}={tag}".encode() in env.split(b"\x00")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def started_by(tag: str, exclude: set[int] | None = None) -> list[Proc]:
    """Live processes carrying this session's tag (zombies are dead: their parent reaps them)."""
    skip = {os.getpid()} | (exclude or set())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        pid = int(name)
        if _tagged(pid, tag) and not _zombie(pid):
            out.append(Proc(pid, _cmdline(pid)))
    return out


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_gone(tag: str, keep=lambda p: False, timeout: float = 60.0, exclude: set[int] | None = None) -> list[Proc]:
    """Poll until no tagged process is left but those `keep` accepts; returns what is left.

    Processes get a grace period: a replica stopped by Serve or an engine core told to shut
    down takes a few seconds to exit."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in started_by(tag, exclude) if not keep(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
