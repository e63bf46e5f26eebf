"""Load test of a running `naba serve`: N clients POST article excerpts to /v1/analyze back to
back (topic + entities) for a fixed time, then print requests/s, latency percentiles and errors.

The excerpts are 300-1,000 characters cut at a word boundary from ANT test articles, chosen with
a fixed seed, so two servers (or two builds) get the same load. Loopback only; standard library
only. Example:

    naba --threads 2 serve --addr 127.0.0.1:18080 &
    python3 scripts/bench/load.py --url http://127.0.0.1:18080 \\
        --data ../shared/datasets/antcorpus/ant_corpus_v1.1.jsonl --clients 16 --seconds 60
"""

import argparse
import json
import random
import statistics
import threading
import time
import urllib.error
import urllib.request


def excerpts(path, n, seed):
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") == "test" and len(rec.get("text") or "") >= 300:
                texts.append(rec["text"])
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.choice(texts)
        size = rng.randint(300, 1000)
        start = rng.randint(0, max(0, len(t) - size))
        cut = t[start:start + size]
        # Whole words only: drop the partial words at both ends.
        cut = cut[cut.find(" ") + 1:] if start > 0 else cut
        cut = cut[:cut.rfind(" ")] if start + size < len(t) else cut
        out.append(cut)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--data", required=True)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--docs", type=int, default=500, help="distinct excerpts to cycle through")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--tasks", default="topic,entities")
    p.add_argument("--out", help="write the result JSON here too")
    args = p.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        p.error("this load test only targets loopback addresses")

    bodies = [json.dumps({"text": t, "tasks": args.tasks.split(",")}).encode()
              for t in excerpts(args.data, args.docs, args.seed)]
    lock = threading.Lock()
    latencies, errors = [], []
    deadline = time.monotonic() + args.seconds

    def client(k):
        i = k
        while time.monotonic() < deadline:
            req = urllib.request.Request(args.url + "/v1/analyze", data=bodies[i % len(bodies)],
                                         headers={"content-type": "application/json"})
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    r.read()
                    ok = r.status == 200
            except (urllib.error.URLError, OSError) as e:
                ok, err = False, str(e)
            dt = time.monotonic() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors.append(err if not ok else "")
            i += args.clients

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    lat = sorted(latencies)
    q = lambda f: lat[min(len(lat) - 1, int(round(f * (len(lat) - 1))))] if lat else float("nan")
    result = {
        "clients": args.clients, "seconds": wall, "requests": len(lat), "errors": len(errors),
        "requests_per_s": len(lat) / wall, "p50_s": q(0.5), "p99_s": q(0.99),
        "mean_s": statistics.mean(lat) if lat else float("nan"),
        "first_errors": errors[:3],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
