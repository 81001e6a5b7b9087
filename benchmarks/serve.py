"""Serving benchmark: what `llamavid serve` saves over separate `llamavid ask` runs, its latency, its memory.

Everything compared is measured side by side in this one run, on the same model, video and questions,
with the video's features already in the (shared, temporary) cache for both sides:

(a) 32 questions on one video: 32 separate `llamavid ask VIDEO Q` processes one after the other (a shell
    loop: each pays interpreter start-up, imports and model loading) vs the same 32 questions sent to one
    `llamavid serve` process by 8 concurrent `openai` clients (4 questions each); the answers are compared.
(b) latency of those 32 requests (p50 / p95 / max), and of single requests with nothing else running;
(c) the server's RSS over 1,000 more requests (8 clients; streaming and not, four questions, an inline
    image every 10th request), sampled every 100 requests after a warm-up;
(d) one client's short questions (sequential) while 4 other clients keep starting long streams (--long-tokens
    new tokens, the end token biased away) and hanging up after a few chunks, against the same client's
    latency on an idle server (goal: <= 1.5x); and how long one such stream takes when nobody hangs up;
(e) the time from SIGTERM to exit with 8 abandoned requests in flight (4 long streams whose clients stopped
    reading, 4 request bodies half sent), with --shutdown-timeout --deadline (goal: <= the deadline + 1 s).

    .venv/bin/python benchmarks/serve.py                 # the shipped demo model on examples/three-shapes.mp4
    .venv/bin/python benchmarks/serve.py --requests 200  # a quicker memory check
    .venv/bin/python benchmarks/serve.py --mid --minutes 2 --requests 100   # benchmarks/ask.py's mid-size model
                                                         # (random weights, LLaMA 6 x 384) on a generated video
    .venv/bin/python benchmarks/serve.py --parts de      # only the hang-up and shutdown measurements

All answers are greedy (temperature 0) with at most --max-tokens new tokens.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMAVID = [sys.executable, "-m", "llamavid_cli"]
QUESTIONS = ["What color is the shape?", "What shape is it?", "How many shapes are there?",
             "Which shape appears first?", "What color is the first shape?", "What color is the last shape?",
             "Which shape appears last?", "What is the second shape?"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_server(args, root: Path, env: dict, log: Path, *extra: str) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([*LLAMAVID, "serve", "--model", args.model, "--port", "0", "--media-root", str(root),
                             *extra], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env=env)
    while True:
        found = re.search(r"serving .* at (http://[^ ]+) ", log.read_text())
        if found:
            return proc, found.group(1), time.perf_counter() - t0
        if proc.poll() is not None:
            raise SystemExit(f"the server did not start:\n{log.read_text()}")
        time.sleep(0.05)


def run_clients(client_factory, jobs: list, clients: int, call) -> tuple[list, list[float], float]:
    """Send ``jobs`` from ``clients`` threads (each takes the next job when done): (results, latencies, wall s)."""
    results, latencies = [None] * len(jobs), [0.0] * len(jobs)
    lock, cursor, errors = threading.Lock(), [0], []

    def worker() -> None:
        client = client_factory()
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(jobs):
                return
            t0 = time.perf_counter()
            try:
                results[i] = call(client, jobs[i])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            latencies[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]!r}")
    return results, latencies, time.perf_counter() - t0


def chat_body(video: Path, question: str, max_tokens: int, **fields) -> dict:
    return {"model": "MODEL", "temperature": 0, "max_tokens": max_tokens, **fields,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video.name}},
                                                      {"type": "text", "text": question}]}]}


def hang_ups(args, media: Path, video: Path, env: dict, work: Path) -> dict:
    """(d) a short question's latency as 4 clients hang up on long streams, against an idle server."""
    import httpx

    proc, url, _ = start_server(args, media, env, work / "hangup.stderr")
    model_id = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    endless = {"2": -100}  # the demo model's end token: biased away, every answer is --long-tokens long
    long_body = {**chat_body(video, "Describe the video.", args.long_tokens, logit_bias=endless, stream=True),
                 "model": model_id}
    short_body = {**chat_body(video, QUESTIONS[0], args.max_tokens), "model": model_id}

    def short() -> float:
        t0 = time.perf_counter()
        response = httpx.post(url + "/v1/chat/completions", json=short_body, timeout=600)
        assert response.status_code == 200, response.text
        return time.perf_counter() - t0

    def long_stream(chunks: int) -> None:
        """A long stream, read for ``chunks`` events, then hung up on."""
        with httpx.stream("POST", url + "/v1/chat/completions", json=long_body, timeout=600) as response:
            for n, _line in enumerate(line for line in response.iter_lines() if line.startswith("data:")):
                if n + 1 >= chunks:
                    break

    for _ in range(3):
        short()  # warm
    idle = [short() for _ in range(args.latency_samples)]
    t0 = time.perf_counter()
    long_stream(args.long_tokens + 10)  # one read to its end: what an abandoned stream used to cost
    one_long = time.perf_counter() - t0

    # 4 clients each start a long stream and, once the model is generating for them, hang up; the short
    # question is sent as they do (raw sockets: a client hangs up whether or not its stream has started)
    import select
    import socket

    port = int(url.rsplit(":", 1)[1])
    raw = json.dumps(long_body).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    at_hangup = []
    for _ in range(args.latency_samples):
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for sock in sockets:
            sock.sendall(request)
        select.select(sockets, [], [], 600)  # a stream has begun: the model is busy with them
        time.sleep(0.3)
        for sock in sockets:
            sock.close()
        at_hangup.append(short())

    # churn: 4 clients keep starting long streams and hanging up after 8 chunks; live streams are legitimate
    # work that a short question taken in the middle of one of their batches waits for
    stop, hung_up = threading.Event(), [0]

    def churn() -> None:
        while not stop.is_set():
            long_stream(8)
            hung_up[0] += 1

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    churning = [short() for _ in range(args.latency_samples)]
    stop.set()
    for t in threads:
        t.join(600)
    health = httpx.get(url + "/health").json()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    return {"idle_latency_median": statistics.median(idle), "idle_latency_p95": percentile(idle, 95),
            "hangup_latency_median": statistics.median(at_hangup), "hangup_latency_p95": percentile(at_hangup, 95),
            "hangup_over_idle": statistics.median(at_hangup) / statistics.median(idle),
            "churn_latency_median": statistics.median(churning), "churn_latency_p95": percentile(churning, 95),
            "churn_over_idle": statistics.median(churning) / statistics.median(idle),
            "long_stream_seconds": one_long, "long_streams_hung_up": hung_up[0] + 4 * args.latency_samples,
            "hangup_health": health}


def abandoned_shutdown(args, media: Path, video: Path, env: dict, work: Path) -> dict:
    """(e) SIGTERM to exit with 8 abandoned requests: 4 long streams nobody reads, 4 bodies half sent."""
    import socket

    import httpx

    proc, url, _ = start_server(args, media, env, work / "shutdown.stderr", "--shutdown-timeout", f"{args.deadline:g}")
    port = int(url.rsplit(":", 1)[1])
    model_id = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    payload = json.dumps({**chat_body(video, "Describe the video.", args.long_tokens, logit_bias={"2": -100},
                                      stream=True), "model": model_id}).encode()
    sockets = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        sockets.append(sock)
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 4000\r\n\r\n" + payload[:len(payload) // 2])
        sockets.append(sock)
    deadline = time.monotonic() + 120
    while httpx.get(url + "/health").json()["running"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the streams are generating
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(600)
    seconds = time.perf_counter() - t0
    for sock in sockets:
        sock.close()
    last = [line for line in (work / "shutdown.stderr").read_text().splitlines() if "stopped" in line]
    return {"shutdown_deadline": args.deadline, "shutdown_exit_code": code, "shutdown_seconds": seconds,
            "shutdown_over_deadline": seconds - args.deadline, "shutdown_log": last[-1] if last else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--video", default=str(ROOT / "examples" / "three-shapes.mp4"))
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="rounds of all the questions sent to the server (median)")
    ap.add_argument("--requests", type=int, default=1000, help="requests for the memory check")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--fps", type=float, default=1.0, help="frames sampled per second, both sides")
    ap.add_argument("--mid", action="store_true", help="benchmarks/ask.py's mid-size random model (built here) "
                                                       "on a generated --minutes video, instead of --model/--video")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--parts", default="abcde", help="which measurements: a-c (throughput, latency, memory), "
                                                     "d (hang-ups), e (shutdown); default all")
    ap.add_argument("--long-tokens", type=int, default=1000, help="(d, e) new tokens of a long stream")
    ap.add_argument("--latency-samples", type=int, default=20, help="(d) short questions timed, idle and busy")
    ap.add_argument("--deadline", type=float, default=5.0, help="(e) the server's --shutdown-timeout")
    args = ap.parse_args()
    import httpx
    import openai

    work = Path(tempfile.mkdtemp(prefix="llamavid-serve-bench-"))
    media = work / "media"
    media.mkdir()
    if args.mid:
        sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
        from ask import build_model  # noqa: E402 - benchmarks/ask.py: the same mid-size model
        from media import make_video  # noqa: E402

        args.llm_hidden, args.llm_layers = 384, 6
        args.model = str(build_model(work, args))
        video = make_video(media / "generated.mp4", seconds=args.minutes * 60, fps=2, width=96, height=64)
    else:
        video = media / Path(args.video).name
        shutil.copy(args.video, video)
    png = work / "frame.png"  # an inline image for the memory mix: the video's first frame
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(png)], check=True)
    image_url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    env = dict(os.environ, LLAMAVID_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
    questions = [QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (#{i // len(QUESTIONS) + 1})")
                 for i in range(args.questions)]
    sampling = ["--temperature", "0", "--max-new-tokens", str(args.max_tokens), "--fps", f"{args.fps:g}"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"model {args.model}; video {video.name} at {args.fps:g} frame/s; {args.questions} questions; "
          f"work dir {work}", file=sys.stderr)

    # warm the shared cache: both sides then read the same features (encoding is not what is compared)
    subprocess.run([*LLAMAVID, "ask", str(video), questions[0], "--model", args.model, *sampling],
                   env=env, check=True, capture_output=True)
    later: dict = {}
    if "d" in args.parts:
        later.update(hang_ups(args, media, video, env, work))
        f = later
        print(f"""
| one client's short question (<= {args.max_tokens} tokens), {args.latency_samples} samples | median s | p95 s |
|---|---:|---:|
| idle server | {f['idle_latency_median']:.3f} | {f['idle_latency_p95']:.3f} |
| sent as 4 clients hang up on {args.long_tokens}-token streams being generated | \
{f['hangup_latency_median']:.3f} | {f['hangup_latency_p95']:.3f} |
| while 4 clients keep starting {args.long_tokens}-token streams and hanging up after 8 chunks | \
{f['churn_latency_median']:.3f} | {f['churn_latency_p95']:.3f} |

As they hang up / idle (median): {f['hangup_over_idle']:.2f}x (goal <= 1.5x); under churn: \
{f['churn_over_idle']:.2f}x. One {args.long_tokens}-token stream read to its end takes \
{f['long_stream_seconds']:.2f} s; {f['long_streams_hung_up']} streams were hung up on \
({f['hangup_health']['cancelled']} questions cancelled).""")
    if "e" in args.parts:
        later.update(abandoned_shutdown(args, media, video, env, work))
        f = later
        print(f"""
SIGTERM with 8 abandoned requests (4 long streams nobody reads, 4 bodies half sent), --shutdown-timeout \
{f['shutdown_deadline']:g}: exit code {f['shutdown_exit_code']} after {f['shutdown_seconds']:.2f} s \
(deadline + {f['shutdown_over_deadline']:.2f} s; goal <= + 1 s). {f['shutdown_log']}""")
    if not set("abc") & set(args.parts):
        if args.json:
            args.json.write_text(json.dumps(later, indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)
        return

    # (a) separate processes
    separate, separate_times = [], []
    t0 = time.perf_counter()
    for q in questions:
        t1 = time.perf_counter()
        done = subprocess.run([*LLAMAVID, "ask", str(video), q, "--model", args.model, *sampling, "--json"],
                              env=env, check=True, capture_output=True, text=True)
        separate_times.append(time.perf_counter() - t1)
        separate.append(json.loads(done.stdout)["answer"])
        print(f"  separate {len(separate)}/{len(questions)}: {separate_times[-1]:.2f} s", file=sys.stderr)
    separate_wall = time.perf_counter() - t0

    # (a), (b) the server
    log = work / "server.stderr"
    proc, url, startup = start_server(args, media, env, log)
    client_factory = lambda: openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)  # noqa: E731
    model_id = client_factory().models.list().data[0].id

    def ask(client, job):
        question, stream, inline = job
        part = ({"type": "image_url", "image_url": {"url": image_url}} if inline
                else {"type": "video_url", "video_url": {"url": video.name}})
        messages = [{"role": "user", "content": [part, {"type": "text", "text": question}]}]
        reply = client.chat.completions.create(model=model_id, messages=messages, temperature=0,
                                               max_tokens=args.max_tokens, stream=stream, extra_body={"fps": args.fps})
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        return reply.choices[0].message.content

    single_latencies = []
    for q in questions[:4]:  # one at a time, nothing else running (also warms the server up)
        t1 = time.perf_counter()
        ask(client_factory(), (q, False, False))
        single_latencies.append(time.perf_counter() - t1)
    rounds = []  # (answers, latencies, wall s, batches) of each round of all the questions
    for _ in range(args.repeats):
        before = httpx.get(url + "/health").json()["batches"]
        rounds.append((*run_clients(client_factory, [(q, False, False) for q in questions], args.clients, ask),
                       httpx.get(url + "/health").json()["batches"] - before))
    walls = [r[2] for r in rounds]
    served, latencies, served_wall, batches = sorted(rounds, key=lambda r: r[2])[len(rounds) // 2]  # the median round
    same = sum(a == b for a, b in zip(served, separate))
    all_same = all(r[0] == served for r in rounds)

    # (c) memory over many requests
    warm = [(questions[i % len(questions)], i % 2 == 1, i % 10 == 5) for i in range(100)]
    run_clients(client_factory, warm, args.clients, ask)
    rss = [rss_mb(proc.pid)]
    mem_latencies: list[float] = []
    t0 = time.perf_counter()
    for start in range(0, args.requests, 100):
        jobs = [(questions[i % len(questions)], i % 2 == 1, i % 10 == 5)
                for i in range(start, min(args.requests, start + 100))]
        _, lat, _ = run_clients(client_factory, jobs, args.clients, ask)
        mem_latencies += lat
        rss.append(rss_mb(proc.pid))
        print(f"  {start + len(jobs)} requests: RSS {rss[-1]:.1f} MiB", file=sys.stderr)
    mem_wall = time.perf_counter() - t0
    health2 = httpx.get(url + "/health").json()
    t1 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)
    stop_seconds = time.perf_counter() - t1

    figures = {
        "model": args.model, "video": video.name, "questions": args.questions, "clients": args.clients,
        "max_tokens": args.max_tokens, "cpus": os.cpu_count(), "load_average_end": os.getloadavg()[0],
        "separate_seconds": separate_wall, "separate_median_per_process": statistics.median(separate_times),
        "server_startup_seconds": startup, "served_seconds": served_wall, "served_rounds_seconds": walls,
        "separate_median_times_n": statistics.median(separate_times) * len(questions),
        "speedup_median": statistics.median(separate_times) * len(questions) / served_wall,
        "answers_same_every_round": all_same,
        "speedup": separate_wall / served_wall, "speedup_with_startup": separate_wall / (served_wall + startup),
        "answers_equal": same, "batches_for_32": batches,
        "latency_p50": percentile(latencies, 50), "latency_p95": percentile(latencies, 95),
        "latency_max": max(latencies),
        "single_latency_median": statistics.median(single_latencies),
        "memory_requests": args.requests, "memory_seconds": mem_wall,
        "memory_latency_p50": percentile(mem_latencies, 50), "memory_latency_p95": percentile(mem_latencies, 95),
        "rss_after_warmup_mb": rss[0], "rss_samples_mb": rss, "rss_growth_mb": rss[-1] - rss[0],
        "rss_peak_mb": max(rss), "batches_total": health2["batches"], "questions_total": health2["questions"],
        "encoded_total": health2["encoded"], "sigterm_exit_code": code, "sigterm_seconds": stop_seconds,
        **later,
    }
    f = figures
    print(f"""
| {f['questions']} questions on one video ({f['model']}, <= {f['max_tokens']} new tokens) | seconds | per question |
|---|---:|---:|
| {f['questions']} separate `llamavid ask` processes, one after the other | {f['separate_seconds']:.2f} | \
{f['separate_seconds'] / f['questions']:.2f} |
| one `llamavid serve`, {f['clients']} concurrent `openai` clients (median of {len(walls)} rounds) | \
{f['served_seconds']:.2f} | {f['served_seconds'] / f['questions']:.3f} |
| (server start-up, once: imports + model load) | {f['server_startup_seconds']:.2f} | |

Separate / served = {f['speedup']:.1f}x (median process x {f['questions']} / median round: {f['speedup_median']:.1f}x; \
counting the
server's start-up once: {f['speedup_with_startup']:.1f}x). Rounds: {', '.join(f'{w:.2f}' for w in walls)} s; separate \
processes: median
{f['separate_median_per_process']:.2f} s. Answers identical to the separate runs: \
{f['answers_equal']}/{f['questions']} (every round the same:
{f['answers_same_every_round']}); the median round went through the model in {f['batches_for_32']} batches.

| latency (s) | p50 | p95 | max |
|---|---:|---:|---:|
| {f['questions']} requests from {f['clients']} concurrent clients (median round) | {f['latency_p50']:.3f} | \
{f['latency_p95']:.3f} | {f['latency_max']:.3f} |
| {f['memory_requests']} requests, {f['clients']} clients (memory run) | {f['memory_latency_p50']:.3f} | \
{f['memory_latency_p95']:.3f} | |
| one request alone (median of 4) | {f['single_latency_median']:.3f} | | |

Server RSS over {f['memory_requests']} requests after 100 warm-up requests (every 100): \
{', '.join(f'{x:.1f}' for x in rss)} MiB;
growth {f['rss_growth_mb']:+.1f} MiB (peak {f['rss_peak_mb']:.1f} MiB), {f['memory_seconds']:.1f} s. Inputs encoded by \
the server:
{f['encoded_total']} (the video was in the cache already) for {f['questions_total']} questions. SIGTERM: exit code
{f['sigterm_exit_code']} after {f['sigterm_seconds']:.2f} s.
""")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
