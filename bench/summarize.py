#!/usr/bin/env python3
"""Prints the medians of Google Benchmark JSON files (bench/results/*.json) as Markdown tables.

usage: python3 bench/summarize.py bench/results/gemm.json [more.json ...]
Each row: the benchmark's name, its median real time, and its counters scaled to G (FLOP/s,
OP/s — integer or float multiply-adds of the quantized products — bytes/s) or k (tokens/s). Runs without --benchmark_repetitions have no median; then the single
iteration row is shown.
"""
import json
import sys


def rows(path):
    with open(path) as f:
        data = json.load(f)
    bench = data["benchmarks"]
    medians = [b for b in bench if b.get("aggregate_name") == "median"]
    return medians if medians else [b for b in bench if b.get("run_type") == "iteration"]


def fmt(name, value):
    if name in ("FLOP/s", "OP/s", "bytes/s"):
        return f"{value / 1e9:.2f}"
    if name == "tokens/s":
        return f"{value / 1e3:.1f}"
    return f"{value:g}"


def main():
    for path in sys.argv[1:]:
        rs = rows(path)
        counters = []
        for r in rs:
            for k in ("FLOP/s", "OP/s", "bytes/s", "weight_bytes", "tokens/s"):
                if k in r and k not in counters:
                    counters.append(k)
        unit = {"FLOP/s": "GFLOP/s", "OP/s": "GOP/s", "bytes/s": "GB/s", "weight_bytes": "weight bytes",
                "tokens/s": "k tokens/s"}
        print(f"### {path}\n")
        print("| benchmark | time (median) | " + " | ".join(unit[c] for c in counters) + " |")
        print("|---|---:|" + "---:|" * len(counters))
        for r in rs:
            name = r.get("run_name", r["name"]).removesuffix("/real_time")
            time = f"{r['real_time']:.4g} {r['time_unit']}"
            cells = [fmt(c, r[c]) if c in r else "" for c in counters]
            print(f"| {name} | {time} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
