"""A Ray cluster of several nodes on this machine: `ray start --head` and `ray start --address`
worker raylets (the venv's `ray`), each on its own free ports and advertising its own custom
resources, as the nodes of a real cluster would.

Every process `ray start` leaves running is re-parented to the test process (a child subreaper,
tests/support/processes.py), so :meth:`LocalCluster.stop` finds them in its process tree and
stops exactly those: never `ray stop`, which stops every Ray on the machine, other people's
included. On SIGTERM the session's watcher stops the whole tree, these nodes with it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import Proc, alive, descendants, free_port

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class LocalCluster:
    #: node name -> custom resources it advertises (the first is the head)
    nodes: dict[str, dict[str, float]]
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp"))  # short: socket paths
    env: dict[str, str] = field(default_factory=dict)
    gcs: str = ""
    dashboard: str = ""
    _before: set[int] = field(default_factory=set)

    def start(self) -> "LocalCluster":
        """Start the head, then each worker; raises with the failing `ray start`'s output."""
        self._before = {p.pid for p in descendants()}
        # an explicit cluster token: `--address` clients need it, and the user's ~/.ray is left alone
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
        port, dash = free_port(), free_port()
        self.gcs, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        for i, (name, resources) in enumerate(self.nodes.items()):
            args = ["--head", f"--port={port}", f"--ray-client-server-port={free_port()}",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--temp-dir={self.temp_dir}"] if i == 0 else [f"--address={self.gcs}"]
            env = dict(self.env)
            if i:  # one machine: a worker node's Serve proxies need ports of their own
                env.update(RAY_SERVE_WORKER_PROXY_HTTP_PORT=str(free_port()),
                           RAY_SERVE_WORKER_PROXY_GRPC_PORT=str(free_port()))
            done = subprocess.run(
                [RAY, "start", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                 f"--resources={json.dumps(resources)}", f"--node-manager-port={free_port()}",
                 f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--object-store-memory={128 * 1024**2}",
                 "--disable-usage-stats"],
                env=env, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"ray start ({name}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return self

    def ray(self, *args: str, timeout: float = 60) -> str:
        """A `ray` CLI command against this cluster (its token in the environment); its stdout."""
        done = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"ray {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def state(self, kind: str) -> list[dict]:
        """Ray's state API (`ray list actors|nodes`), through the head's dashboard."""
        return json.loads(self.ray("list", kind, "--address", self.dashboard, "--format", "json", "--detail",
                                   "--limit", "10000"))

    def ours(self) -> list[Proc]:
        """The processes this cluster started: new under the test process since start, with
        everything below them (not what the session's own Ray started meanwhile)."""
        me, tree = os.getpid(), descendants()
        roots = {p.pid for p in tree if p.ppid == me and p.pid not in self._before}
        by_parent: dict[int, list[Proc]] = {}
        for p in tree:
            by_parent.setdefault(p.ppid, []).append(p)
        out, stack = [], [p for p in tree if p.pid in roots]
        while stack:
            p = stack.pop()
            out.append(p)
            stack.extend(by_parent.get(p.pid, []))
        return out

    def stop(self, grace: float = 10.0) -> list[Proc]:
        """As `ray stop` does, but for this cluster's processes only: SIGTERM, then SIGKILL what
        outlives `grace` (Serve's controller and proxies may not exit on SIGTERM while their GCS is
        going away); removes the temp dir. Returns what is still alive after that (for the caller
        to fail on)."""
        procs = self.ours()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            for p in procs:
                try:
                    os.kill(p.pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + wait
            while (procs := [p for p in procs if alive(p.pid)]) and time.monotonic() < deadline:
                time.sleep(0.3)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return procs
