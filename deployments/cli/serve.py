"""`lookahead serve` and `lookahead demo`: the application on local Ray."""
from __future__ import annotations

import json
import os
import sys
import time

from deployments.app import start_local

DEMO_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?")


def cmd_serve(args) -> int:
    from deployments.kuberay.profiles import PROFILES
    from deployments.serve_config import load_app_config

    cfg = load_app_config(args.config) if args.config else PROFILES["cpu-demo"]
    start_local(cfg, fake_gpus=args.fake_gpus)
    print(f"lookahead: serving '{cfg.server.served_model_name}' (target {cfg.target.engine.model}) on "
          f"http://0.0.0.0:{cfg.server.http_port}/v1 and gRPC :{cfg.server.grpc_port}; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


def demo_config():
    """The demo pair, one fake GPU per role as on a real cluster."""
    from deployments.config import RoleDeployment
    from deployments.kuberay.profiles import PROFILES

    cfg = PROFILES["cpu-demo"].model_copy(deep=True)
    for role in (cfg.target, cfg.draft):
        role.deployment = RoleDeployment(num_gpus=1, num_cpus=0, max_ongoing_requests=8)
    # sync LR alternates draft and target: the target may use every core while it runs
    cfg.target.engine.cpu_threads = os.cpu_count() or 1
    return cfg


def cmd_demo(args) -> int:
    from deployments import model_cache as models

    cfg = demo_config()
    needed = [cfg.target.engine.model, cfg.draft.engine.model]
    try:
        models.prepare(needed, progress=True)
    except models.ModelError as exc:
        print(f"lookahead demo: {exc}", file=sys.stderr)
        return 2
    print("starting Ray Serve: draft, target, orchestrator and ingress deployments ...", flush=True)
    t0 = time.time()
    start_local(cfg, fake_gpus=2, quiet=True)
    print(f"application ready in {time.time() - t0:.0f}s on http://127.0.0.1:{cfg.server.http_port}/v1\n")
    question = args.question or DEMO_QUESTION
    print(f"Q: {question}\n")
    lr = _stream_question(cfg, question, "lr", args.max_tokens, show=True)
    print("\n" + _stats_line(lr))
    print("\nthe same question in ar mode (target only) ...", flush=True)
    ar = _stream_question(cfg, question, "ar", args.max_tokens, show=False)
    same = "identical" if ar["text"] == lr["text"] else "different"
    print(f"ar: {ar['wall_s']:.1f}s, lr: {lr['wall_s']:.1f}s -> lr/ar wall-time ratio "
          f"{lr['wall_s'] / ar['wall_s']:.2f} (answers {same}; exact verifier, greedy)")
    if args.json:
        print(json.dumps({"lr": lr, "ar": ar}))
    from ray import serve

    serve.shutdown()
    return 0


def _stream_question(cfg, question: str, mode: str, max_tokens: int, show: bool) -> dict:
    """One streamed chat completion through the HTTP API; prints each step as it arrives."""
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{cfg.server.http_port}/v1", api_key="demo", max_retries=0,
                    timeout=600)
    t0 = time.time()
    stream = client.chat.completions.create(
        model=cfg.server.served_model_name, messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"lookahead": {"mode": mode}})
    text, stats = "", {}
    for chunk in stream:
        for step in (chunk.model_extra.get("lookahead") or {}).get("steps", []):
            text += step["text"]
            if show:
                tag = "draft ✓" if step["source"] == "draft" else "target "
                print(f"[{tag}] {step['text'].rstrip()}", flush=True)
        if chunk.usage is not None:
            stats = chunk.usage.model_extra.get("lookahead", {})
    return {"text": text, "wall_s": time.time() - t0, "stats": stats}


def _stats_line(run: dict) -> str:
    st = run["stats"]
    return (f"lr: {st.get('cycles')} cycles, {st.get('accepted_steps')} accepted draft steps, "
            f"{st.get('target_steps')} target steps, acceptance {st.get('acceptance_rate')}, "
            f"{st.get('tokens')} tokens in {run['wall_s']:.1f}s "
            f"(draft {st.get('draft_s')}s, target {st.get('target_s')}s, verify {st.get('verify_s')}s)")


def add_cli(sub) -> None:
    s = sub.add_parser("serve", help="run the application on local Ray (HTTP 8000, gRPC 9000)")
    s.add_argument("--config", help="Serve config YAML or AppConfig YAML (default: the cpu-demo profile)")
    s.add_argument("--fake-gpus", type=int, default=0, help="advertise N GPUs to local Ray (CPU testing)")
    s.set_defaults(func=cmd_serve)
    d = sub.add_parser("demo", help="prepare the packaged models, start the app, stream one GSM8K answer")
    d.add_argument("--question", default=None)
    d.add_argument("--max-tokens", type=int, default=160)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
