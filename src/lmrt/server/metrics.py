"""The server's Prometheus metrics: what the HTTP layer counts (requests, tokens, latencies) and what the engine
reports (running and waiting requests, preemptions, steps, KV blocks, prefix-cache hits), read at each scrape."""

from __future__ import annotations

from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _EngineCollector:
    """Engine stats as gauges and counters, read from `stats()` (Pipeline.stats) when scraped; nothing while the
    model loads (stats is None then)."""

    def __init__(self, stats: Callable[[], Optional[dict]]):
        self.stats = stats

    def collect(self):
        s = self.stats()
        if s is None:
            return
        gauges = {
            "lmrt_num_requests_running": ("requests in the persistent batch", s["num_running"]),
            "lmrt_num_requests_waiting": ("requests queued for admission", s["num_waiting"]),
            "lmrt_kv_blocks_free": ("KV cache blocks free (cached prefix blocks included)", s["num_free_blocks"]),
            "lmrt_kv_blocks_used": ("KV cache blocks held by requests", s["num_blocks"] - s["num_free_blocks"]),
            "lmrt_kv_blocks_total": ("KV cache blocks in the pool", s["num_blocks"]),
            "lmrt_kv_cache_bytes": ("bytes of the KV pool (resident as its pages are first used)", s["kv_cache_bytes"]),
            "lmrt_prefix_cache_hit_rate": (
                "prompt tokens served by the prefix cache / prompt tokens looked up, since start",
                s["prefix_cache_hit_tokens"] / s["prefix_cache_query_tokens"]
                if s["prefix_cache_query_tokens"]
                else 0.0,
            ),
        }
        for name, (doc, value) in gauges.items():
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
        counters = {
            "lmrt_engine_steps": ("forward steps of the persistent batch", s["num_steps"]),
            "lmrt_engine_preemptions": ("requests preempted (KV blocks freed, recomputed later)", s["num_preemptions"]),
            "lmrt_engine_prefill_tokens": ("prompt tokens computed", s["num_prefill_tokens"]),
            "lmrt_engine_decode_tokens": ("tokens decoded; over steps, the mean decode batch", s["num_decode_tokens"]),
            "lmrt_prefix_cache_hit_tokens": ("prompt tokens served by the prefix cache", s["prefix_cache_hit_tokens"]),
        }
        for name, (doc, value) in counters.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            yield c


class Metrics:
    def __init__(self, stats: Callable[[], Optional[dict]]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lmrt_requests",
            "requests finished, by endpoint and finish reason",
            ["endpoint", "finish_reason"],
            registry=r,
        )
        self.errors = Counter(
            "lmrt_request_errors", "requests refused or failed, by HTTP status", ["status"], registry=r
        )
        self.prompt_tokens = Counter("lmrt_prompt_tokens", "prompt tokens of admitted requests", registry=r)
        self.generation_tokens = Counter("lmrt_generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(
            "lmrt_time_to_first_token_seconds", "request arrival to its first token", buckets=TTFT_BUCKETS, registry=r
        )
        self.itl = Histogram(
            "lmrt_time_per_output_token_seconds",
            "time between a request's successive output chunks, per token",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        r.register(_EngineCollector(stats))
