"""Latency of the FastAPI + LightGBM scoring service (service.py), as its application
sees it: one payment per HTTP POST over one keep-alive connection (http.client), one
request at a time, timed from before the request is sent to after the response is read.
The JSON bodies are made before the timed loop, so the client's own work is not counted.

    python client.py --port PORT --live LIVE.tsv --warm 200 --timed 5000 [--scores-out F]

LIVE.tsv holds id, card, amount, time (Unix microseconds), merchant, category, lat, lon.
The first --warm payments are sent untimed, the next --timed ones timed. Sends only to
127.0.0.1; stops after --deadline seconds whatever is left. Prints p50_us, p99_us,
requests and rows_per_s (requests a second of the timed loop).
"""

import argparse
import datetime
import http.client
import json
import sys
import time

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def wait_ready(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"client: the service on 127.0.0.1:{port} did not answer within {seconds} s")


def bodies(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            i, card, amount, at, merchant, category, lat, lon = line.rstrip("\n").split("\t")
            ts = EPOCH + datetime.timedelta(microseconds=int(at))
            out.append((int(i), json.dumps({
                "card": card, "amount": float(amount), "occurred_at": ts.isoformat(),
                "merchant": None if merchant == "\\N" else merchant,
                "category": None if category == "\\N" else category,
                "lat": None if lat == "\\N" else float(lat),
                "lon": None if lon == "\\N" else float(lon),
            }).encode()))
    return out


def percentile(sorted_values, q):
    # Linear interpolation between closest ranks, as PostgreSQL's percentile_cont.
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--live", required=True)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--timed", type=int, default=5000)
    ap.add_argument("--deadline", type=float, default=300.0)
    ap.add_argument("--ready-seconds", type=float, default=120.0)
    ap.add_argument("--scores-out")
    a = ap.parse_args()

    wait_ready(a.port, a.ready_seconds)
    payments = bodies(a.live)[: a.warm + a.timed]
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    stop_at = time.monotonic() + a.deadline
    timings, scores = [], []
    loop_start = None
    for n, (i, body) in enumerate(payments):
        if time.monotonic() > stop_at:
            print(f"client: deadline reached after {n} requests", file=sys.stderr)
            break
        if n == a.warm:
            loop_start = time.perf_counter()
        t0 = time.perf_counter_ns()
        conn.request("POST", "/score", body, headers)
        r = conn.getresponse()
        data = r.read()
        t1 = time.perf_counter_ns()
        if r.status != 200:
            sys.exit(f"client: HTTP {r.status}: {data[:200]!r}")
        if n >= a.warm:
            timings.append((t1 - t0) / 1000.0)
            scores.append((i, json.loads(data)["score"]))
    loop_seconds = time.perf_counter() - loop_start if loop_start is not None else 0.0
    conn.close()
    if not timings:
        sys.exit("client: no timed request")
    timings.sort()
    print(f"p50_us {percentile(timings, 0.5):.1f}")
    print(f"p99_us {percentile(timings, 0.99):.1f}")
    print(f"requests {len(timings)}")
    print(f"rows_per_s {len(timings) / loop_seconds:.0f}")
    if a.scores_out:
        with open(a.scores_out, "w", encoding="utf-8") as f:
            for i, s in scores:
                f.write(f"service\t{i}\t{s!r}\n")


if __name__ == "__main__":
    main()
