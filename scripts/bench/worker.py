#!/usr/bin/env python3
"""Throughput of a `naba worker` pool beside `naba predict` on the same messages, in one run.

Starts its own redis-server on a free loopback port, takes the first N texts of a CSV column,
times `naba predict` over them (one process, start-up included), then puts the same texts on a
stream and times pools of workers (start-up included, until the last result is on the output
stream), splitting the same CPU threads between the workers. Prints messages/s and the ratio.

    python3 scripts/bench/worker.py --naba target/release/naba --model topic-asnd --task topic \
        --data ../shared/datasets/asnd/test.csv --column Content --messages 1000 --workers 1,2

Needs only the standard library and Debian's redis-server.
"""

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time


class Resp:
    """The few Redis commands this script needs, over a raw socket (RESP2)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = self.sock.makefile("rb")

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))

    def reply(self):
        line = self.buf.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.buf.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.send(*args)
        return self.reply()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--naba", default="target/release/naba")
    ap.add_argument("--model", required=True, help="model name or directory")
    ap.add_argument("--task", choices=["topic", "ner"], default="topic")
    ap.add_argument("--data", required=True, help="CSV file")
    ap.add_argument("--column", default="text")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="pool sizes to time, comma list")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()

    with open(a.data, newline="", encoding="utf-8-sig") as f:
        texts = [" ".join(r[a.column].split()) for r in csv.DictReader(f)]
    texts = [t for t in texts if t][: a.messages]
    n = len(texts)
    tmp = tempfile.mkdtemp()
    lines = os.path.join(tmp, "messages.txt")
    with open(lines, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")

    t0 = time.perf_counter()
    subprocess.run(
        [a.naba, "--threads", str(a.threads), "predict", "--task", a.task, "--model", a.model,
         "--input", lines],
        check=True, stdout=subprocess.DEVNULL)
    predict_s = time.perf_counter() - t0
    print(f"{n} messages from {a.data}:{a.column}, task {a.task}, model {a.model}, "
          f"{a.threads} threads, start-up included")
    print(f"  naba predict        {predict_s:7.2f} s  {n / predict_s:8.1f} msg/s")

    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                r = Resp(port)
                r.call("PING")
                break
            except OSError:
                time.sleep(0.05)
        tasks = "topic" if a.task == "topic" else "entities"
        model_flag = "--topic-model" if a.task == "topic" else "--ner-model"
        for size in [int(x) for x in a.workers.split(",")]:
            stream, out = f"in{size}", f"out{size}"
            for i, t in enumerate(texts):
                r.send("XADD", stream, "*", "id", i, "text", t)
            for _ in texts:
                r.reply()
            threads = max(1, a.threads // size)
            t0 = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [a.naba, "--threads", str(threads), "worker", "--redis",
                     f"redis://127.0.0.1:{port}", "--stream", stream, "--output", out,
                     "--consumer", f"w{k}", "--tasks", tasks, "--batch", str(a.batch),
                     model_flag, a.model],
                    stderr=subprocess.DEVNULL)
                for k in range(size)
            ]
            while r.call("XLEN", out) < n:
                if any(p.poll() is not None for p in procs):
                    sys.exit("a worker exited early")
                time.sleep(0.02)
            pool_s = time.perf_counter() - t0
            for p in procs:
                p.terminate()
            codes = [p.wait(timeout=60) for p in procs]
            print(f"  pool of {size} worker{'s' if size > 1 else ' '} "
                  f"{pool_s:7.2f} s  {n / pool_s:8.1f} msg/s  "
                  f"{predict_s / pool_s:.2f}x naba predict  (exit codes {codes}, "
                  f"{threads} thread{'s' if threads > 1 else ''} each)")
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
