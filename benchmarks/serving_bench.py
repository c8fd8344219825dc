"""Serving latency: server-side inference time and client round trip over a real websocket on 127.0.0.1.

A policy with random weights (`policy_config.create_dummy_policy`) is served by `WebsocketPolicyServer` on a
background thread; `WebsocketClientPolicy` clients send YAM observations (three 224x224 uint8 cameras,
14-dim state, prompt, adv_ind) exactly as a robot would. Reported, after warm-up requests (compilation):

- server infer_ms p50/p95: `server_timing.infer_ms`, time inside `Policy.infer` (transforms + model);
- model infer_ms p50: `policy_timing.infer_ms`, the jitted `sample_actions` alone;
- round trip p50/p95: client send -> reply decoded (adds msgpack, websocket, thread hand-off);
- with `--clients` concurrent clients: throughput and round-trip p95 (requests queue for one inference
  thread), and `/healthz` latency p95 while they run (the event loop must stay responsive).

CPU size: the dummy-size `debug_pi06` (dummy Gemma experts, tiny SigLIP). `--full`: the full pi0.6 model of
`pi06_yam_vial_30fps_infer` (Gemma 2B + 300M, So400m/14, bfloat16) with random weights; needs a GPU.

    uv run benchmarks/serving_bench.py [--full] [--requests 50] [--clients 8] [--cfg-beta 2.0]
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import pathlib
import tempfile
import threading
import time

import jax
import numpy as np

from openpi.policies import policy_config
from openpi.policies import yam_policy
from openpi.serving import websocket_policy_server
from openpi.shared import testing
from openpi.training import config as _config
from openpi_client import msgpack_numpy
from openpi_client import websocket_client_policy

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "serving_bench.json"


@dataclasses.dataclass(frozen=True)
class Args:
    full: bool = False
    """Full-size pi0.6 (bfloat16, needs a GPU) instead of the dummy-size model."""
    requests: int = 50
    """Timed sequential requests from one client."""
    warmup: int = 3
    """Untimed requests first (the first one compiles)."""
    clients: int = 8
    """Concurrent clients for the throughput measurement (0 skips it)."""
    requests_per_client: int = 10
    num_steps: int = 10
    """Flow-matching steps per request (openpi's default)."""
    cfg_beta: float | None = None
    """Also exercise classifier-free guidance (doubles the suffix batch)."""


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _healthz_ms(port: int) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    conn.close()
    return (time.perf_counter() - start) * 1000


def _make_policy(args: Args, tokenizer_path: pathlib.Path):
    name = "pi06_yam_vial_30fps_infer" if args.full else "debug_pi06"
    train_config = dataclasses.replace(_config.get_config(name), tokenizer_path=str(tokenizer_path))
    policy = policy_config.create_dummy_policy(
        train_config, sample_kwargs={"num_steps": args.num_steps}, cfg_beta=args.cfg_beta
    )
    return train_config, policy


def main(args: Args) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        spm = testing.train_tiny_sentencepiece(pathlib.Path(tmp) / "paligemma_tokenizer.model")
        train_config, policy = _make_policy(args, spm)
    observations = [yam_policy.make_yam_example(rng) for _ in range(8)]
    request_bytes = len(msgpack_numpy.packb(observations[0]))

    metrics: dict[str, tuple[float, str]] = {}
    with websocket_policy_server.WebsocketPolicyServer(
        policy, port=0, metadata=policy.metadata
    ).start_in_thread() as srv:
        with websocket_client_policy.WebsocketClientPolicy(port=srv.port, connect_timeout_s=60) as client:
            start = time.perf_counter()
            client.infer(observations[0])
            metrics["first request (compile)"] = (time.perf_counter() - start, "s")
            for i in range(1, args.warmup):
                client.infer(observations[i % len(observations)])
            server_ms, model_ms, round_trip_ms = [], [], []
            for i in range(args.requests):
                start = time.perf_counter()
                reply = client.infer(observations[i % len(observations)])
                round_trip_ms.append((time.perf_counter() - start) * 1000)
                server_ms.append(reply["server_timing"]["infer_ms"])
                model_ms.append(reply["policy_timing"]["infer_ms"])
        metrics["server infer_ms p50"] = (_pct(server_ms, 50), "ms")
        metrics["server infer_ms p95"] = (_pct(server_ms, 95), "ms")
        metrics["model infer_ms p50"] = (_pct(model_ms, 50), "ms")
        metrics["round trip p50"] = (_pct(round_trip_ms, 50), "ms")
        metrics["round trip p95"] = (_pct(round_trip_ms, 95), "ms")
        metrics["request size"] = (request_bytes / 1e3, "kB")

        if args.clients > 0:
            trips: list[float] = []
            lock = threading.Lock()

            def run_client(seed: int) -> None:
                with websocket_client_policy.WebsocketClientPolicy(port=srv.port, connect_timeout_s=60) as c:
                    for j in range(args.requests_per_client):
                        t0 = time.perf_counter()
                        c.infer(observations[(seed + j) % len(observations)])
                        with lock:
                            trips.append((time.perf_counter() - t0) * 1000)

            threads = [threading.Thread(target=run_client, args=(k,)) for k in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            health = []
            while any(t.is_alive() for t in threads):
                health.append(_healthz_ms(srv.port))
                time.sleep(0.02)
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            metrics[f"{args.clients} clients throughput"] = (len(trips) / elapsed, "req/s")
            metrics[f"{args.clients} clients round trip p95"] = (_pct(trips, 95), "ms")
            if health:
                metrics["/healthz under load p95"] = (_pct(health, 95), "ms")

    print(f"serving_bench: {train_config.name} ({'full' if args.full else 'dummy'}), {jax.devices()[0].platform}")
    print(f"{'metric':<36} {'value':>10}  unit")
    for name, (value, unit) in metrics.items():
        print(f"{name:<36} {value:>10.2f}  {unit}")
    result = {
        "name": "serving_bench",
        "full": args.full,
        "config": train_config.name,
        "platform": jax.devices()[0].platform,
        "num_steps": args.num_steps,
        "requests": args.requests,
        "clients": args.clients,
        "requests_per_client": args.requests_per_client,
        "cfg_beta": args.cfg_beta,
        "action_horizon": train_config.model.action_horizon,
        # CPU numbers depend on what else runs; the 1-minute load average at the end says how busy it was.
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "metrics": {name: {"value": value, "unit": unit} for name, (value, unit) in metrics.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = RESULTS.with_suffix(".json.tmp")
    tmp_file.write_text(json.dumps(result, indent=2))
    tmp_file.replace(RESULTS)
    return result


if __name__ == "__main__":
    from openpi.shared import cli

    cli.run(lambda argv: main(cli.parse(Args, argv, description=__doc__)), name="serving_bench")
