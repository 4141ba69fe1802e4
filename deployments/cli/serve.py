"""`lookahead serve` and `lookahead demo`: the application on local Ray."""
from __future__ import annotations

import json
import os
import sys
import time

from deployments.app import ray_init_args, start_local
from deployments.cli.shutdown import GRACE_S, Stopping, StopSignals, say, stop

#: room for the demo answer to reach its final number (Qwen2.5-0.5B writes about 150-250 tokens)
DEMO_MAX_TOKENS = 400
#: long enough for a whole first cycle: a drafted step, the target's step, one verdict
DEMO_WARMUP_TOKENS = 32
#: SmolLM2 separates steps with blank lines only when asked; Qwen does either way
DEMO_SYSTEM = "Solve the problem step by step. Put a blank line between steps."
DEMO_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?")


def serve_plan(args) -> tuple:
    """(AppConfig, start_local keyword arguments) of `lookahead serve`'s arguments: the config
    (default: the cpu-demo profile) with --port/--grpc-port over its server settings, and where
    and how to start (--address, --host, --fake-gpus, --api-key). ValueError: arguments that
    cannot go together."""
    from deployments.profiles import PROFILES
    from deployments.serve_config import load_app_config

    cfg = load_app_config(args.config) if args.config else PROFILES["cpu-demo"]
    ports = {k: v for k, v in (("http_port", args.port), ("grpc_port", args.grpc_port)) if v is not None}
    for port in ports.values():
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a TCP port (1-65535)")
    if ports:
        cfg = cfg.model_copy(update={"server": cfg.server.model_validate({**cfg.server.model_dump(), **ports})})
    if cfg.server.http_port == cfg.server.grpc_port:
        raise ValueError(f"HTTP and gRPC cannot share port {cfg.server.http_port}")
    if args.address and args.fake_gpus:
        raise ValueError("--fake-gpus is for a private Ray; an existing cluster (--address) has the GPUs it has")
    if args.grace_period < 0:
        raise ValueError(f"--grace-period {args.grace_period:g}: a number of seconds, 0 or more")
    keys = [k.strip() for arg in args.api_key or [] for k in arg.split(",") if k.strip()]
    env_vars = {cfg.server.api_keys_env: ",".join(keys)} if keys else None
    return cfg, {"address": args.address, "host": args.host, "fake_gpus": args.fake_gpus, "env_vars": env_vars}


def cmd_serve(args) -> int:
    try:
        cfg, start = serve_plan(args)
    except ValueError as exc:
        print(f"lookahead serve: {exc}", file=sys.stderr)
        return 2
    import ray

    signals = StopSignals()
    try:
        ray.init(**ray_init_args(address=start["address"], fake_gpus=start["fake_gpus"], env_vars=start["env_vars"]))
    except ConnectionError as exc:
        if not args.address:
            raise
        print(f"lookahead serve: cannot reach the Ray cluster at {args.address} ({exc}). Ray clusters "
              "authenticate with a token by default: with an explicit address, set RAY_AUTH_MODE=token and give "
              "the cluster's token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token or $RAY_AUTH_TOKEN_PATH); "
              "--address auto finds a local cluster's token itself.", file=sys.stderr)
        return 2
    signals.install()  # after ray.init, which installs a SIGTERM handler of its own
    where = f"Ray cluster {args.address}" if args.address else "a private Ray"
    try:
        start_local(cfg, **start)  # ray is initialized already: only Serve and the application
        print(f"lookahead: serving '{cfg.server.served_model_name}' (target {cfg.target.engine.model}) on "
              f"http://{args.host}:{cfg.server.http_port}/v1 and gRPC :{cfg.server.grpc_port} ({where}"
              f"{', API keys on' if start['env_vars'] else ''}); Ctrl-C or SIGTERM stops "
              f"(requests in flight get {args.grace_period:g}s)", flush=True)
        signals.wait()
    except Stopping as sig:
        say(f"{sig}: stopping")
    except BaseException:
        signals.stopping = True  # the start failed: stop what did start, then report the failure
        stop(["lookahead"], private=not args.address, grace_s=0)
        raise
    stop(["lookahead"], private=not args.address, grace_s=args.grace_period, hurry=signals.hurry)
    say("stopped" + (f"; the application is deleted, {where} runs on" if args.address else ""))
    return 0


#: the second application beside the demo's: the same target with no speculation at all, for ar
PLAIN_APP = "plain"
#: speculation forced on for a shorter answer: enough cycles to show drafts checked and accepted
DEMO_FORCED_TOKENS = 160


def demo_config():
    """The demo: the production engine on CPU (the cpu-vllm profile: a vLLM Qwen2.5-0.5B target
    with n-gram token speculation inside each step, a vLLM SmolLM2-135M draft), the embedding
    verifier behind the numeric and plan guards (the CPU demo's: it accepts some SmolLM2 steps,
    exact never does across tokenizers), lr+sd with depth auto; one fake GPU per role as on a
    real cluster."""
    from deployments.config import RoleDeployment
    from deployments.profiles import PROFILES

    cfg = PROFILES["cpu-vllm"].model_copy(deep=True)
    cfg.verifier = PROFILES["cpu-demo"].verifier.model_copy()
    cfg.defaults = cfg.defaults.model_copy(update={"mode": "lr+sd", "depth": "auto", "max_tokens": DEMO_MAX_TOKENS})
    for role in (cfg.target, cfg.draft):
        role.deployment = RoleDeployment(num_gpus=1, num_cpus=0, max_ongoing_requests=8)
    # the fake GPUs place the roles; the engines still share this machine's cores
    cfg.server = cfg.server.model_copy(update={"shared_devices": True})
    return cfg


def plain_config(cfg):
    """ar's application: the demo's target engine with no token speculation and no draft. Token
    speculation is an engine setting, so `ar` on the demo's own target would really be sd."""
    from deployments.config import VerifierConfig

    target = cfg.target.model_copy(deep=True)
    target.engine = target.engine.model_copy(update={"token_speculation": "none"})
    return cfg.model_copy(update={"target": target, "draft": None, "judge": None,
                                  "verifier": VerifierConfig(kind="exact"),
                                  "defaults": cfg.defaults.model_copy(update={"mode": "ar"})})


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
    # three vLLM engines on one small machine: a smaller KV cache each (the answers are short)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import ray

    signals = StopSignals()
    ray.init(**ray_init_args(fake_gpus=3, quiet=True))
    signals.install()  # after ray.init, which installs a SIGTERM handler of its own
    try:
        _demo(args, cfg)
    except Stopping as sig:
        say(f"{sig}: the demo stops before its end")
        stop(["lookahead", PLAIN_APP], private=True, grace_s=args.grace_period, hurry=signals.hurry)
        return signals.exit_code
    except BaseException:
        signals.stopping = True
        stop(["lookahead", PLAIN_APP], private=True, grace_s=0)
        raise
    signals.stopping = True  # a signal from here on only cuts the grace period short
    stop(["lookahead", PLAIN_APP], private=True, grace_s=args.grace_period, hurry=signals.hurry)
    print(f"demo done in {time.time() - t_start:.0f}s")
    return 0


def _demo(args, cfg) -> None:
    """The demo's run on the started Ray: both applications, the warm-up, the answers compared."""
    print("starting Ray Serve: draft, target, orchestrator and ingress deployments, and beside them a plain "
          "target (no speculation at all) for ar ...", flush=True)
    t0 = time.time()
    start_local(cfg, fake_gpus=3, quiet=True, also={PLAIN_APP: plain_config(cfg)})
    print(f"applications ready in {time.time() - t0:.0f}s on http://127.0.0.1:{cfg.server.http_port}/v1 "
          f"(ar: /{PLAIN_APP}/v1)")
    print(f"target {cfg.target.engine.model} on vLLM with n-gram token speculation "
          f"({cfg.target.engine.num_speculative_tokens} tokens), draft {cfg.draft.engine.model} on vLLM, verifier "
          f"{cfg.verifier.kind}, depth {cfg.defaults.depth}, greedy\n")
    question = args.question or DEMO_QUESTION
    # The first request after start-up pays the engines' cold start: a short untimed request on
    # each application first. Like any request it joins the replica's history, the policy's prior.
    print("warm-up: one short request through each application (untimed) ...", flush=True)
    _stream_question(cfg, question, "lr+sd", DEMO_WARMUP_TOKENS, show=False)
    _stream_question(cfg, question, "ar", DEMO_WARMUP_TOKENS, show=False, app=PLAIN_APP)
    print(f"\nQ: {question}\n")
    print("lr+sd, depth auto (the default: n-gram token speculation inside every target step; steps drafted "
          "only where the policy's cost model predicts a gain)", flush=True)
    before = _token_acceptance(cfg)
    lr = _stream_question(cfg, question, "lr+sd", args.max_tokens, show=True)
    lr["token_level"] = _delta(_token_acceptance(cfg), before)
    print("\n" + _stats_line(lr))
    for line in _policy_lines(lr["stats"]):
        print(line)
    forced = None
    if args.forced_depth:
        print(f"\nlr+sd, depth {args.forced_depth} on every cycle (step speculation forced on, to show drafts checked "
              f"and accepted, and what that costs on this machine; {DEMO_FORCED_TOKENS} tokens)", flush=True)
        forced = _stream_question(cfg, question, "lr+sd", DEMO_FORCED_TOKENS, show=True, depth=args.forced_depth)
        print("\n" + _stats_line(forced))
    print("\nthe same question in ar mode: the plain target, no token or step speculation ...", flush=True)
    ar = _stream_question(cfg, question, "ar", args.max_tokens, show=False, app=PLAIN_APP)
    print(_comparison(lr, ar, "lr+sd (auto)"))
    for line in _layer_lines(lr, ar):
        print(line)
    if forced is not None:
        print(_forced_line(forced, ar, args.forced_depth))
    if args.json:
        print(json.dumps({"lr+sd": lr, "lr+sd_forced": forced, "ar": ar}))


def _token_acceptance(cfg) -> dict:
    """The target replica's token-level speculation totals, from the stats endpoint (over HTTP,
    like every other demo request: no Serve handle in this process)."""
    import httpx

    r = httpx.get(f"http://127.0.0.1:{cfg.server.http_port}/v1/lookahead/stats", timeout=30)
    r.raise_for_status()
    return r.json().get("token_speculation") or {}


def _delta(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("spec_steps", "draft_tokens", "accepted_tokens")}


def _stream_question(cfg, question: str, mode: str, max_tokens: int, show: bool, depth: int | None = None,
                     app: str = "") -> dict:
    """One streamed chat completion through the HTTP API; prints each step as it arrives."""
    from openai import OpenAI

    prefix = f"/{app}" if app else ""
    client = OpenAI(base_url=f"http://127.0.0.1:{cfg.server.http_port}{prefix}/v1", api_key="demo", max_retries=0,
                    timeout=600)
    t0 = time.time()
    stream = client.chat.completions.create(
        model=cfg.server.served_model_name,
        messages=[{"role": "system", "content": DEMO_SYSTEM}, {"role": "user", "content": question}],
        max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"lookahead": {"mode": mode, **({"depth": depth} if depth else {})}})
    text, stats, steps, finish = "", {}, [], None
    with stream:  # closed however the loop ends (a stop signal too): the server ends the request at once
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
    used = sum(1 for step in run["steps"] if step["source"] == "draft")
    aside = st.get("aside_verdicts") or 0
    return (f"{st.get('mode', 'lr')}: {st.get('cycles')} cycles, {used} drafted steps in the answer, "
            f"{st.get('target_steps')} target steps; drafts judged {st.get('verified_steps')} "
            f"({aside} of them probes judged beside the answer), accepted {st.get('accepted_steps')}; "
            f"{st.get('tokens')} tokens in {run['wall_s']:.1f}s "
            f"(busy: draft {st.get('draft_s')}s, target {st.get('target_s')}s, verify {st.get('verify_s')}s)")


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
            f"{ar['finish_reason']}); {lr['stats'].get('tokens')} tokens in {lr['wall_s']:.1f}s vs ar "
            f"{ar['stats'].get('tokens')} in {ar['wall_s']:.1f}s = {_speed(lr, ar):.2f}x ar's speed "
            f"(tokens per second; one run each on this machine, other load included)")


def _speed(run: dict, ar: dict) -> float:
    """Tokens per second relative to ar's (the answers may differ in length)."""
    return (run["stats"].get("tokens") or 0) / run["wall_s"] / ((ar["stats"].get("tokens") or 1) / ar["wall_s"])


def _layer_lines(lr: dict, ar: dict) -> list[str]:
    """Which layer contributed what, from the run's own numbers."""
    tok, st = lr.get("token_level") or {}, lr["stats"]
    lines = ["which layer did what:"]
    if tok.get("spec_steps"):
        speed = _speed(lr, ar)
        # claim the gain only when there is one: on shared cores a run may be slower than ar
        gain = ("the gain over ar comes from here" if speed > 1 and not st.get("accepted_steps")
                else f"lr+sd ran at {speed:.2f}x ar's speed in all")
        lines.append(f"  token level (vLLM n-gram proposals inside each target step): {tok['accepted_tokens']} of "
                     f"{tok['draft_tokens']} proposed tokens accepted, "
                     f"{1 + tok['accepted_tokens'] / tok['spec_steps']:.2f} tokens per target forward pass instead "
                     f"of 1: {gain}")
    counts = st.get("depth_counts") or []
    drafting = sum(counts[1:])
    lines.append(f"  step level (drafted steps, depth auto): {drafting} drafting cycles, {st.get('probes', 0)} probes "
                 f"(one drafted step judged beside the target's own, the answer never waiting for it), "
                 f"{st.get('accepted_steps', 0)} of {st.get('verified_steps', 0)} drafts accepted")
    if st.get("policy", {}).get("reason"):
        lines.append(f"  why: {st['policy']['reason']}")
    return lines


def _forced_line(forced: dict, ar: dict, depth: int) -> str:
    st = forced["stats"]
    used = sum(1 for step in forced["steps"] if step["source"] == "draft")
    return (f"lr+sd (depth {depth}, {forced['stats'].get('tokens')} tokens): {used} accepted drafted steps used, "
            f"{_speed(forced, ar):.2f}x ar's speed: on two shared cores a cycle pays {depth} draft steps and a batch "
            f"of {depth + 1} target rows for {len(forced['steps']) / max(1, st.get('cycles') or 1):.2f} steps per cycle")


def _num(v: float | None) -> str:
    return "none" if v is None else f"{v:.12g}"


def add_cli(sub) -> None:
    s = sub.add_parser("serve", help="run the application on a private Ray, or an existing cluster (--address)")
    s.add_argument("--config", help="Serve config YAML or AppConfig YAML (default: the cpu-demo profile)")
    s.add_argument("--address", default=None,
                   help="deploy onto this running Ray cluster (e.g. auto, 10.0.0.5:6379, ray://head:10001) "
                        "instead of starting a private one")
    s.add_argument("--host", default="0.0.0.0",
                   help="the HTTP proxy listens here (default 0.0.0.0; Serve's gRPC proxy listens on all addresses)")
    s.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's server.http_port)")
    s.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: the config's server.grpc_port)")
    s.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="require this API key (repeatable or comma-separated); default: the keys in "
                        "$LOOKAHEAD_API_KEYS (server.api_keys_env), none: open")
    s.add_argument("--fake-gpus", type=int, default=0, help="advertise N GPUs to the private Ray (CPU testing)")
    s.add_argument("--grace-period", type=float, default=GRACE_S, metavar="SECONDS",
                   help=f"on SIGTERM or SIGINT, requests in flight get this long to finish before they end with "
                        f"a shutdown error (default {GRACE_S:g}); a second signal cuts it short")
    s.set_defaults(func=cmd_serve)
    d = sub.add_parser("demo", help="prepare the packaged models, start the app, stream one GSM8K answer")
    d.add_argument("--question", default=None)
    d.add_argument("--max-tokens", type=int, default=DEMO_MAX_TOKENS)
    d.add_argument("--forced-depth", type=int, default=2, metavar="G",
                   help="also answer with speculation forced to depth G on every cycle (0: skip that run)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--grace-period", type=float, default=GRACE_S, metavar="SECONDS",
                   help="on SIGTERM or SIGINT, how long requests in flight get to finish")
    d.set_defaults(func=cmd_demo)
