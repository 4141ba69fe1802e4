"""The application on local Ray: `lookahead serve`, `lookahead demo`, benchmarks and tests."""
from __future__ import annotations

import os
import tempfile


def start_local(cfg, *, fake_gpus: int = 0, quiet: bool = False):
    """ray.init (if needed) + Serve on the config's HTTP and gRPC ports + the application."""
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.serve_config import serve_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not ray.is_initialized():
        # Fake GPUs let num_gpus=1 roles schedule on a CPU box, exactly as they would on a GPU node.
        ray.init(num_cpus=max(4, os.cpu_count() or 1), num_gpus=fake_gpus or None,
                 object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=not quiet,
                 _temp_dir=tempfile.mkdtemp(prefix="lookahead-ray-"))
    sc = serve_config(cfg)
    serve.start(http_options={"host": "0.0.0.0", "port": cfg.server.http_port}, grpc_options=sc["grpc_options"])
    return serve.run(build_app(cfg), name="lookahead", route_prefix="/")
