"""Optional API keys for HTTP (Authorization: Bearer) and gRPC (metadata 'authorization').

Keys come from an environment variable (comma-separated) and/or a file (one per line); they
are never logged. With no keys configured, everything is open. Comparison is constant-time.
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[bytes, ...] = ()

    @classmethod
    def load(cls, env_var: str, path: str | None = None) -> "ApiKeys":
        raw = [k for k in os.environ.get(env_var, "").split(",")]
        if path:
            with open(path, encoding="utf-8") as f:
                raw += f.read().splitlines()
        return cls(tuple(k.strip().encode() for k in raw if k.strip()))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def allows(self, presented: str | None) -> bool:
        if not self.keys:
            return True
        token = (presented or "").strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        candidate = token.encode()
        # compare against every key so timing does not reveal which (or whether one) matched
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def allows_http(self, header: str | None) -> bool:
        return self.allows(header)

    def allows_grpc(self, metadata: dict) -> bool:
        return self.allows(metadata.get("authorization") or metadata.get("x-api-key"))

    def __repr__(self) -> str:  # never print the keys themselves
        return f"ApiKeys(count={len(self.keys)})"
