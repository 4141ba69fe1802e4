"""`lookahead serve` and `lookahead demo`: the application on local Ray."""
from __future__ import annotations

import json
import os
import sys
import time

from deployments.app import start_local

#: room for the demo answer to reach its final number (Qwen2.5-0.5B writes about 150-250 tokens)
DEMO_MAX_TOKENS = 400
#: long enough for a whole first cycle: a drafted step, the target's step, one verdict
DEMO_WARMUP_TOKENS = 32
#: SmolLM2 separates steps with blank lines only when asked; Qwen does either way
DEMO_SYSTEM = "Solve the problem step by step. Put a blank line between steps."
DEMO_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?")


def cmd_serve(args) -> int:
    from deployments.profiles import PROFILES
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
    from deployments.profiles import PROFILES

    cfg = PROFILES["cpu-demo"].model_copy(deep=True)
    for role in (cfg.target, cfg.draft):
        role.deployment = RoleDeployment(num_gpus=1, num_cpus=0, max_ongoing_requests=8)
    # sync LR alternates draft and target: the target may use every core while it runs
    cfg.target.engine.cpu_threads = os.cpu_count() or 1
    return cfg


def cmd_demo(args) -> int:
    from deployments import model_cache as models
    from verifier import kinds

    t_start = time.time()
    cfg = demo_config()
    needed = [cfg.target.engine.model, cfg.draft.engine.model, *kinds.models_of(cfg.verifier)]
    try:
        models.prepare(needed, progress=True)
    except models.ModelError as exc:
        print(f"lookahead demo: {exc}", file=sys.stderr)
        return 2
    print("starting Ray Serve: draft, target, orchestrator and ingress deployments ...", flush=True)
    t0 = time.time()
    start_local(cfg, fake_gpus=2, quiet=True)
    print(f"application ready in {time.time() - t0:.0f}s on http://127.0.0.1:{cfg.server.http_port}/v1")
    print(f"draft {cfg.draft.engine.model} -> target {cfg.target.engine.model}, verifier {cfg.verifier.kind}, "
          f"depth {cfg.defaults.depth}, greedy\n")
    question = args.question or DEMO_QUESTION
    # The first request after start-up pays the engines' cold start (measured: lr first at 0.72x
    # of ar, ar then answering on warm engines). A short untimed request warms the draft, target
    # and verifier alike; like any request it joins the replica's history, the policy's prior.
    print("warm-up: one short lr request through draft, target and verifier (untimed) ...", flush=True)
    _stream_question(cfg, question, "lr", DEMO_WARMUP_TOKENS, show=False)
    print(f"\nQ: {question}\n")
    print("lr, depth auto (the default: the policy drafts only where its cost model predicts a gain)", flush=True)
    lr = _stream_question(cfg, question, "lr", args.max_tokens, show=True)
    print("\n" + _stats_line(lr))
    for line in _policy_lines(lr["stats"]):
        print(line)
    forced = None
    if args.forced_depth:
        print(f"\nlr, depth {args.forced_depth} on every cycle (speculation forced on, to show drafts checked "
              "and accepted, and what that costs on this machine)", flush=True)
        forced = _stream_question(cfg, question, "lr", args.max_tokens, show=True, depth=args.forced_depth)
        print("\n" + _stats_line(forced))
    print("\nthe same question in ar mode (target only) ...", flush=True)
    ar = _stream_question(cfg, question, "ar", args.max_tokens, show=False)
    print(_comparison(lr, ar, "lr (auto)"))
    if forced is not None:
        print(_comparison(forced, ar, f"lr (depth {args.forced_depth})"))
    if args.json:
        print(json.dumps({"lr": lr, "lr_forced": forced, "ar": ar}))
    from ray import serve

    serve.shutdown()
    print(f"demo done in {time.time() - t_start:.0f}s")
    return 0


def _stream_question(cfg, question: str, mode: str, max_tokens: int, show: bool, depth: int | None = None) -> dict:
    """One streamed chat completion through the HTTP API; prints each step as it arrives."""
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{cfg.server.http_port}/v1", api_key="demo", max_retries=0,
                    timeout=600)
    t0 = time.time()
    stream = client.chat.completions.create(
        model=cfg.server.served_model_name,
        messages=[{"role": "system", "content": DEMO_SYSTEM}, {"role": "user", "content": question}],
        max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"lookahead": {"mode": mode, **({"depth": depth} if depth else {})}})
    text, stats, steps, finish = "", {}, [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        for step in (chunk.model_extra.get("lookahead") or {}).get("steps", []):
            text += step["text"]
            steps.append(step)
            if show:
                print(f"{step_tag(step)} {step['text'].strip()}", flush=True)
        if chunk.usage is not None:
            stats = chunk.usage.model_extra.get("lookahead", {})
    return {"text": text, "steps": steps, "wall_s": time.time() - t0, "stats": stats, "finish_reason": finish}


def step_tag(step: dict) -> str:
    """[draft ✓ verifier score] for an accepted draft; [target] for the target's own step, with
    the verdict that rejected the draft at that position when there was one."""
    score = step.get("score")
    verdict = f" {step['verifier']} {score:.2f}" if step.get("verifier") and score is not None else ""
    if step["source"] == "draft":
        return f"[draft ✓{verdict}]"
    return f"[target{' (draft rejected:' + verdict + ')' if verdict else ''}]"


def _stats_line(run: dict) -> str:
    st = run["stats"]
    return (f"lr: {st.get('cycles')} cycles, {st.get('accepted_steps')} accepted draft steps of "
            f"{st.get('verified_steps')} checked, {st.get('target_steps')} target steps, "
            f"{st.get('tokens')} tokens in {run['wall_s']:.1f}s "
            f"(draft {st.get('draft_s')}s, target {st.get('target_s')}s, verify {st.get('verify_s')}s)")


def _policy_lines(st: dict) -> list[str]:
    """The adaptive depth's choices: cycles per depth, probes, and its reasons as they changed."""
    counts = st.get("depth_counts") or []
    if not counts and not st.get("probes"):
        return []
    chosen = ", ".join(f"g={g}: {n}" for g, n in enumerate(counts) if n) or "none"
    lines = [f"depth auto: cycles by chosen depth {chosen}; probe cycles {st.get('probes', 0)}"]
    lines += [f"  {line}" for line in st.get("policy_log") or []]
    return lines


def _comparison(lr: dict, ar: dict, name: str) -> str:
    from benchmarks.grading import extract_answer  # the bench's reading of a final number

    same = "identical text" if ar["text"] == lr["text"] else "different text"
    lr_n, ar_n = extract_answer(lr["text"]), extract_answer(ar["text"])
    verdict = "same final answer" if lr_n == ar_n else "DIFFERENT final answers"
    return (f"{name}: final answer {_num(lr_n)} vs ar {_num(ar_n)} ({verdict}, {same}; finish {lr['finish_reason']} / "
            f"{ar['finish_reason']}); wall {lr['wall_s']:.1f}s vs ar {ar['wall_s']:.1f}s = "
            f"{ar['wall_s'] / lr['wall_s']:.2f}x ar's speed (one run each on this machine, other load included)")


def _num(v: float | None) -> str:
    return "none" if v is None else f"{v:.12g}"


def add_cli(sub) -> None:
    s = sub.add_parser("serve", help="run the application on local Ray (HTTP 8000, gRPC 9000)")
    s.add_argument("--config", help="Serve config YAML or AppConfig YAML (default: the cpu-demo profile)")
    s.add_argument("--fake-gpus", type=int, default=0, help="advertise N GPUs to local Ray (CPU testing)")
    s.set_defaults(func=cmd_serve)
    d = sub.add_parser("demo", help="prepare the packaged models, start the app, stream one GSM8K answer")
    d.add_argument("--question", default=None)
    d.add_argument("--max-tokens", type=int, default=DEMO_MAX_TOKENS)
    d.add_argument("--forced-depth", type=int, default=2, metavar="G",
                   help="also answer with speculation forced to depth G on every cycle (0: skip that run)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
