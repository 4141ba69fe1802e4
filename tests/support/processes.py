"""What a test run leaves behind: the processes it started and the ports it bound.

The test process makes itself a child subreaper (Linux prctl): a process that loses its parent (a
vLLM engine core whose replica died, the Ray of a CLI subprocess that exited) is re-parented to the
test process instead of init, so everything the session started stays in its process tree while the
session lives, and a walk of that tree finds it. Reading process titles would not be enough on its
own: Ray's and vLLM's processes rename themselves, and some overwrite their environment doing so.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cmdline: str

    def __str__(self) -> str:
        return f"{self.pid} (parent {self.ppid}) {self.cmdline[:160]}"


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process (and stay findable), not to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) from /proc/<pid>/stat; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """The process runs (a zombie is dead, only unreaped)."""
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\x00", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int | None = None) -> list[Proc]:
    """Live processes below `root` (this process), zombies left out (they are dead, only unreaped)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
                states[int(name)] = st[1]
    out, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if states.get(pid) != "Z":
            ppid = (_stat(pid) or (0, ""))[0]
            out.append(Proc(pid, ppid, _cmdline(pid)))
    return out


def ends_with_us(p: Proc) -> bool:
    """multiprocessing's resource tracker, started by this process for its spawned children (vLLM's
    engine cores): it lives until this process exits, by design, and then exits on its own."""
    return p.ppid == os.getpid() and "multiprocessing.resource_tracker" in p.cmdline


def replica_of(p: Proc) -> str | None:
    """The Serve application a replica process belongs to (its title is ray::ServeReplica:<app>:<deployment>)."""
    if "ServeReplica:" not in p.cmdline:
        return None
    return p.cmdline.split("ServeReplica:", 1)[1].split(":", 1)[0]


def orphans(procs: list[Proc], own_engine_cores: int) -> list[Proc]:
    """Processes re-parented to this one after their starter died: a Ray worker or a vLLM process
    directly under the test process. vLLM engines built in this process have their engine core as a
    direct child legitimately: `own_engine_cores` of them are not counted (while more are there, all
    are reported, as they cannot be told apart)."""
    me = os.getpid()
    direct = [p for p in procs if p.ppid == me]
    cores = [p for p in direct if "EngineCore" in p.cmdline]
    out = [p for p in direct if p.cmdline.startswith("ray::") or "VLLM::Worker" in p.cmdline]
    return out + (cores if len(cores) > own_engine_cores else [])


def wait_gone(stray, timeout: float = 60.0) -> list[Proc]:
    """Poll this process's descendants until `stray(descendants)` returns none; returns the last ones.

    Processes get a grace period: a replica stopped by Serve or an engine core told to shut down
    takes a few seconds to exit."""
    deadline = time.monotonic() + timeout
    while True:
        left = stray(descendants())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def terminate_all(grace: float = 10.0) -> None:
    """SIGTERM every descendant, then SIGKILL whatever is still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for p in descendants():
            try:
                os.kill(p.pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and [p for p in descendants() if not ends_with_us(p)]:
            time.sleep(0.2)


def _ignore(signum, frame) -> None:
    """A Python-level handler, so that the interpreter's C handler writes the wakeup byte."""


def stop_everything_on_sigterm() -> None:
    """On SIGTERM (a CI timeout, `kill`), stop every descendant, then exit.

    The work is done by a watcher thread woken through signal.set_wakeup_fd, not by a Python
    signal handler: a handler runs only when the main thread next executes Python code, and the
    main thread may sit for minutes in a call into Ray, gRPC or vLLM. Call again after a library
    installs its own SIGTERM handler (ray.init does)."""
    signal.signal(signal.SIGTERM, _ignore)
    if getattr(stop_everything_on_sigterm, "watching", False):
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            if signal.SIGTERM in os.read(r, 64):
                terminate_all()
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="sigterm-stops-everything", daemon=True).start()
    stop_everything_on_sigterm.watching = True


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
