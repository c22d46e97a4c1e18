"""Scale-out benchmarks: cross-gateway latency through Redis, what one Redis takes, and fan-out
with the Redis broker on vs off (idle connections: bench_idle.py).

Each figure is printed next to a baseline measured in the same run:
- cross-gateway latency (client -> gateway A -> Redis -> gateway B -> client) next to Redis
  PUBLISH -> subscriber alone (redis-py asyncio, the floor any Redis-based design pays) and to
  the same path on one gateway without Redis;
- frames/s through one Redis with the broker's publish script next to plain PUBLISH;
- fan-out to N clients of one gateway with the Redis broker next to the same gateway alone.

A real redis-server (Debian's) runs on a free loopback port in a temp dir. Machines here are
noisy: read the ratios.

    .venv/bin/python bench/bench_redis.py [--clients 1000] [--messages 100] [--samples 1000]
        [--only latency|fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _kit import ServerProc, close_all, open_client, token  # noqa: E402
from bench_core import fanout_rate, subscribe_all  # noqa: E402
from virtwire.testing import free_port  # noqa: E402

REDIS_SERVER = "/usr/bin/redis-server"


def gateway(redis_url: str | None = None, prefix: str = "bench") -> ServerProc:
    port = free_port()
    args = [sys.executable, str(HERE / "_redis_servers.py"), str(port)]
    if redis_url is not None:
        args += [redis_url, prefix]
    return ServerProc(args, port)


def bare(port: int | None = None) -> ServerProc:
    port = port or free_port()
    return ServerProc([sys.executable, str(HERE / "_core_servers.py"), "bare", str(port)], port)


def redis_server(workdir: Path) -> tuple[ServerProc, str]:
    port = free_port()
    conf = workdir / "redis.conf"
    conf.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {workdir}\n'
        f"logfile {workdir / 'redis.log'}\n"
    )
    return ServerProc([REDIS_SERVER, str(conf)], port), f"redis://127.0.0.1:{port}/0"


def pct(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49] * 1000, q[98] * 1000


# -- latency ----------------------------------------------------------------------------
async def redis_alone(url: str, n: int) -> tuple[float, float]:
    import redis.asyncio as aioredis

    pub = aioredis.Redis.from_url(url)
    sub = aioredis.Redis.from_url(url)
    ps = sub.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe("bench-alone")
    payload = json.dumps({"type": "vm-status", "data": {"vmId": "vm-001", "cpu": 45.2}}) * 2
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await pub.publish("bench-alone", payload)
        while await ps.get_message(timeout=5) is None:
            pass
        times.append(time.perf_counter() - start)
    await ps.aclose()
    await pub.aclose()
    await sub.aclose()
    return pct(times[n // 10 :])


async def through_gateways(sender_port: int, receiver_port: int, n: int) -> tuple[float, float]:
    tok = token()
    sender = await open_client(sender_port, tok)
    receiver = await open_client(receiver_port, tok)
    await subscribe_all([receiver])
    times = []
    for i in range(n):
        wait = receiver.expect(1)
        start = time.perf_counter()
        sender.send_text(json.dumps({"type": "bench-broadcast", "data": {"n": 1, "t": i}}))
        await asyncio.wait_for(wait, 10)
        times.append(time.perf_counter() - start)
    close_all([sender, receiver])
    return pct(times[n // 10 :])


async def redis_throughput(url: str, n: int) -> tuple[float, float]:
    """Frames/s one Redis takes: pipelined PUBLISH (baseline) and the broker's publish
    script (ownership check, offset, XADD, latest value, PUBLISH), 256 per pipeline like the
    broker, one subscriber attached."""
    import redis.asyncio as aioredis
    from virtwire_redis import scripts

    r = aioredis.Redis.from_url(url)
    sub = aioredis.Redis.from_url(url)
    ps = sub.pubsub()
    await ps.subscribe("tp")
    script = r.register_script(scripts.PUBLISH)
    frame = json.dumps({"type": "vm-status", "data": {"vmId": "vm-001", "cpu": 45.2}})[:-1]
    rates = []
    for kind in ("publish", "script"):
        start = time.perf_counter()
        for batch in range(0, n, 256):
            pipe = r.pipeline(transaction=False)
            for i in range(batch, min(n, batch + 256)):
                if kind == "publish":
                    pipe.publish("tp", frame)
                else:
                    key = f"vm-{i % 1000}"
                    await script(
                        keys=["tp.meta", "tp.stream", "tp.latest", f"tp.owner.{key}"],
                        args=[
                            "node",
                            json.dumps(key),
                            key,
                            frame,
                            1000,
                            60000,
                            "0",
                            "e1",
                            "1",
                            "1",
                            6000,
                            "tp",
                            "0",
                        ],
                        client=pipe,
                    )
            await pipe.execute()
        rates.append(n / (time.perf_counter() - start))
    await ps.aclose()
    await r.aclose()
    await sub.aclose()
    return rates[0], rates[1]


# -- fan-out ----------------------------------------------------------------------------
async def latency_section(url: str, args: argparse.Namespace) -> None:
    a, b, alone = gateway(url, "lat"), gateway(url, "lat"), gateway()
    try:
        for p in (a, b, alone):
            await p.ready()
        await asyncio.sleep(0.5)  # let both gateways subscribe (not a sync point)
        base = await redis_alone(url, args.samples)
        one = await through_gateways(alone.port, alone.port, args.samples)
        cross = await through_gateways(a.port, b.port, args.samples)
    finally:
        for p in (a, b, alone):
            p.stop()
    print(f"latency, {args.samples} samples (ms)          p50       p99")
    print(f"  Redis PUBLISH -> subscriber (baseline)  {base[0]:7.3f}  {base[1]:7.3f}")
    print(f"  client -> gateway -> client, alone      {one[0]:7.3f}  {one[1]:7.3f}")
    print(f"  client -> A -> Redis -> B -> client     {cross[0]:7.3f}  {cross[1]:7.3f}")
    print("  (goal: cross-gateway p99 <= 5 ms)")
    raw, scripted = await redis_throughput(url, 50000)
    print("frames/s through one Redis (pipelined, one subscriber)")
    print(f"  PUBLISH alone (baseline)        {raw:10.0f}")
    print(f"  the broker's publish script     {scripted:10.0f}  ratio {scripted / raw:.2f}")


async def fanout_section(url: str, args: argparse.Namespace) -> None:
    rates = {}
    for kind in ("alone", "redis"):
        g = gateway(url if kind == "redis" else None, "fan")
        try:
            await g.ready()
            rates[kind] = await fanout_rate(
                g.port, args.clients, args.messages, args.rounds, request_id=None
            )
        finally:
            g.stop()
    ratio = rates["redis"] / rates["alone"]
    print(f"fan-out to {args.clients} clients of one gateway (msg/s)")
    print(f"  alone, in-memory broker (baseline)  {rates['alone']:12.0f}")
    print(f"  with the Redis broker               {rates['redis']:12.0f}  ratio {ratio:.2f}")
    print("  (goal: >= 0.9)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--only", choices=["latency", "fanout"], default=None)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with tempfile.TemporaryDirectory() as tmp:
        redis, url = redis_server(Path(tmp))
        try:
            await redis.ready()
            if args.only in (None, "latency"):
                await latency_section(url, args)
            if args.only in (None, "fanout"):
                await fanout_section(url, args)
        finally:
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
