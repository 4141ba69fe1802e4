"""Regenerate the checked-in Python stubs: `python -m protos.generate [--check]`.

Stubs are generated with the repo root as include path, so they import as
`protos.lookahead.v1.lookahead_pb2`, the path Ray Serve's gRPC proxy is configured with.
"""
from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: every proto of the repository; each one's stubs land beside it (<name>_pb2.py, <name>_pb2_grpc.py)
PROTOS = ("protos/lookahead/v1/lookahead.proto", "protos/grpc/health/v1/health.proto")
OUTPUTS = tuple(f"{p.removesuffix('.proto')}{suffix}" for p in PROTOS for suffix in ("_pb2.py", "_pb2_grpc.py"))


def generate(out_dir: Path) -> None:
    from importlib.resources import files

    from grpc_tools import protoc

    well_known = files("grpc_tools") / "_proto"  # google/protobuf/*.proto (struct.proto)
    rc = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", *(str(ROOT / p) for p in PROTOS)])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp)
        stale = [n for n in OUTPUTS if not (ROOT / n).exists() or not filecmp.cmp(fresh / n, ROOT / n, shallow=False)]
        if check:
            for n in stale:
                print(f"stale generated stub: {n} (run: python -m protos.generate)")
            return 1 if stale else 0
        for n in OUTPUTS:
            (ROOT / n).write_bytes((fresh / n).read_bytes())
    print("generated", ", ".join(OUTPUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
