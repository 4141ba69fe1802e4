"""How `lookahead serve` and `lookahead demo` stop on SIGTERM (as Kubernetes and systemd stop a
process) or SIGINT (Ctrl-C).

1. Drain: every ingress replica refuses new requests (503, UNAVAILABLE) and reports how many it
   still runs; those run on, with the whole application behind them, until they finish or the
   grace period ends (`--grace-period`, default GRACE_S).
2. Abort: what still runs then ends with a clean error (an error event and [DONE] on a stream).
3. Delete the application(s): Serve stops each replica, and an engine replica closes its engine,
   so vLLM's EngineCore process ends with its replica.
4. A private Ray (no --address): Ray stopped and waited for (Serve's controller and proxies with
   it), so the process exits with nothing of it left and its ports free. With --address
   the cluster and its Serve are not ours: only the application goes.

A second signal while stopping skips what is left of the grace period.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

#: seconds requests in flight get to finish after a stop signal (Kubernetes' default
#: terminationGracePeriodSeconds is 30 s; the teardown after it takes a few seconds more)
GRACE_S = 30.0
#: after the abort, how long the aborted requests get to send their error and end
ABORT_WAIT_S = 10.0
INGRESS = "Ingress"


class Stopping(BaseException):
    """Raised in the main thread by the first stop signal (like KeyboardInterrupt, not an error)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGTERM and SIGINT: the first raises Stopping in the main thread; while stopping, a later
    one sets `hurry` (the grace period is cut short). Install after ray.init, which puts in its own
    SIGTERM handler (one that exits on the spot, leaving the cluster to the interpreter's exit)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False
        self.hurry = threading.Event()

    def install(self) -> "StopSignals":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self.stopping:
            self.hurry.set()
            return
        self.stopping = True
        raise Stopping(signum)

    def wait(self) -> None:
        """Sleep until a stop signal (which raises Stopping)."""
        while True:
            time.sleep(3600)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (kill, a container's stop) takes Ctrl-C's path for the commands that do not drain a
    server (generate, bench, models): KeyboardInterrupt in the main thread runs their `finally`
    blocks, which close the engines. Python's default for SIGTERM ends the process on the spot,
    and a vLLM EngineCore process then outlives it. `serve` and `demo` put in their own handlers
    (StopSignals) once Ray is up. The earlier handler comes back afterwards (a caller in the same
    process, a test run, keeps its own)."""
    global stopped_by
    stopped_by = signal.SIGINT
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread
        return

    def handle(signum, frame) -> None:
        global stopped_by
        stopped_by = signum
        # at once, as Ctrl-C outside asyncio.run: asyncio's own SIGINT handler only cancels the main
        # task, which waits for its next await (an engine loading takes a minute before one)
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: the signal that stopped the command (SIGINT unless `sigterm_as_interrupt` saw SIGTERM)
stopped_by = signal.SIGINT


def say(message: str) -> None:
    print(f"lookahead: {message}", file=sys.stderr, flush=True)


def _in_flight(app: str, method: str) -> int:
    """Ask every ingress replica of `app` (their sum of requests in flight); 0 when it has none."""
    from ray import serve

    handle = serve.get_deployment_handle(INGRESS, app_name=app)
    return sum(handle.broadcast(method).results(timeout_s=30))


def drain(apps: list[str], grace_s: float, hurry: threading.Event) -> None:
    """Phases 1 and 2: drain the applications' ingress replicas, abort what outlives `grace_s`."""
    deadline = time.monotonic() + grace_s
    left = {app: _in_flight(app, "drain_requests") for app in apps}
    if sum(left.values()):
        say(f"stopping: {sum(left.values())} request(s) in flight get up to {grace_s:g}s to finish "
            f"(new ones are refused)")
    while sum(left.values()) and time.monotonic() < deadline and not hurry.is_set():
        hurry.wait(0.5)
        left = {app: _in_flight(app, "drain_requests") for app in apps if left.get(app)}
    if not sum(left.values()):
        return
    say(f"stopping: {sum(left.values())} request(s) still running: ending them with a shutdown error")
    for app in left:
        _in_flight(app, "abort_requests")
    until = time.monotonic() + ABORT_WAIT_S
    while sum(left.values()) and time.monotonic() < until:
        time.sleep(0.2)
        left = {app: _in_flight(app, "drain_requests") for app in apps if left.get(app)}


def stop(apps: list[str], *, private: bool, grace_s: float = GRACE_S, hurry: threading.Event | None = None) -> None:
    """Drain, abort, delete the applications; on a private Ray also Serve and Ray, waited for.
    Errors of one phase do not skip the next: Ray is stopped whatever happened before."""
    import ray
    from ray import serve

    hurry = hurry or threading.Event()
    try:
        drain(apps, grace_s, hurry)
    except Exception as exc:  # noqa: BLE001 - an application that is not up: nothing to drain
        say(f"stopping: could not drain ({type(exc).__name__}: {exc}); deleting the application(s)")
    for app in apps:
        try:
            serve.delete(app)
        except Exception as exc:  # noqa: BLE001
            say(f"stopping: deleting application {app!r} failed ({type(exc).__name__}: {exc})")
    if private and ray.is_initialized():
        # Not serve.shutdown(): it asks Serve's controller to stop and waits on that call until the
        # controller kills itself, and Ray reports the call so cut off as a failed task on stderr
        # ("Task ServeController.graceful_shutdown failed ... killed by `ray.kill`"). With the
        # applications deleted, the controller and proxies hold nothing that needs more than the
        # cluster's own stop; Ray's processes, waited for, take them along.
        ray.shutdown(wait_for_processes=True)
    elif ray.is_initialized():
        ray.shutdown()  # only this driver's connection: the cluster runs on
