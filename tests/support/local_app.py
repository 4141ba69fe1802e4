"""The application's own deployment classes wired together in one process, without Ray.

The Ingress, Orchestrator and EngineDeployment classes run unchanged (their Serve decorators
are unwrapped); stand-ins for DeploymentHandles connect them. Each call gets a pickled copy
of its arguments and results, as crossing a process would, and cancelling a call cancels the
task that runs it, as Serve does. The HTTP app is the one `Ingress` builds, served over
httpx's ASGI transport: API tests then exercise the real request path with real models in
seconds, not a Serve start-up.
"""
from __future__ import annotations

import asyncio
import pickle
from typing import Any

from deployments.config import AppConfig
from tests.support.engines import replica_context

_END = object()


def _copy(x: Any) -> Any:
    return pickle.loads(pickle.dumps(x))


class _Response:
    """A DeploymentResponse stand-in: awaitable, cancellable."""

    def __init__(self, fn, args) -> None:
        async def call():
            out = fn(*_copy(args))
            if asyncio.iscoroutine(out):
                out = await out
            return _copy(out)

        self._task = asyncio.ensure_future(call())

    def __await__(self):
        return self._task.__await__()

    def cancel(self) -> None:
        self._task.cancel()


class _StreamResponse:
    """A DeploymentResponseGenerator stand-in: the generator runs in its own task (as on a
    replica) and cancelling that task runs the generator's `finally`."""

    def __init__(self, agen) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump(agen))

    async def _pump(self, agen) -> None:
        try:
            async for item in agen:
                await self._queue.put(_copy(item))
            await self._queue.put(_END)
        except asyncio.CancelledError:
            await agen.aclose()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller, as Serve does
            await self._queue.put(exc)

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> None:
        self._task.cancel()


class _Method:
    def __init__(self, handle: "LocalHandle", name: str) -> None:
        self.handle, self.name = handle, name

    def remote(self, *args):
        fn = getattr(self.handle.obj, self.name)
        if self.handle.stream:
            return _StreamResponse(fn(*_copy(args)))
        return _Response(fn, args)


class LocalHandle:
    def __init__(self, obj, stream: bool = False) -> None:
        self.obj, self.stream = obj, stream

    def options(self, **kw) -> "LocalHandle":
        return LocalHandle(self.obj, kw.get("stream", self.stream))

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)


def _unwrap(deployment):
    """The user class behind a Serve deployment (under @serve.ingress, the wrapper's base)."""
    cls = getattr(deployment, "func_or_class", deployment)
    return next((c for c in cls.__mro__[1:] if c.__name__ == cls.__name__), cls)


class LocalApp:
    """Engines, orchestrator and ingress of one AppConfig, in this process."""

    def __init__(self, cfg: AppConfig, engines: dict | None = None) -> None:
        from deployments.serve.engine import EngineDeployment
        from deployments.serve.ingress import Ingress
        from deployments.serve.orchestrator import Orchestrator

        raw = cfg.model_dump(mode="json")
        self.engines = engines if engines is not None else {}
        for role in ("target", "draft", "judge"):
            rc = getattr(cfg, role)
            if rc is not None and role not in self.engines:
                with replica_context(f"{role.capitalize()}Engine"):
                    self.engines[role] = _unwrap(EngineDeployment)(rc.engine.model_dump(mode="json"))
        handles = {role: LocalHandle(e) for role, e in self.engines.items()}
        with replica_context("Orchestrator"):
            self.orchestrator = _unwrap(Orchestrator)(raw, handles["target"], handles.get("draft"),
                                                      handles.get("judge"))
        with replica_context("Ingress"):
            self.ingress = _unwrap(Ingress)(raw, LocalHandle(self.orchestrator))
            self.asgi = self.ingress.__serve_build_asgi_app__()

    def http(self, **kw):
        """An httpx.AsyncClient on the ASGI app (use inside the test's event loop)."""
        import httpx

        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False),
                                 base_url="http://local", **kw)

    def openai(self, http_client=None, **kw):
        """The official openai SDK, talking to this app."""
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url="http://local/v1", api_key="unused", max_retries=0,
                           http_client=http_client or self.http(), **kw)
