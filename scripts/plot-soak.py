#!/usr/bin/env python3
"""Plots `biomatch chaos --soak --csv FILE` as a PNG: each process's resident memory, open files
and sockets of all processes, PostgreSQL's connections and each interval's p99, against minutes.

    python3 -m venv /tmp/plot && /tmp/plot/bin/pip install -q matplotlib==3.9.2
    /tmp/plot/bin/python scripts/plot-soak.py soak.csv docs/soak.png
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source, target):
    rss = defaultdict(list)
    files, sockets, connections, p99 = {}, {}, {}, {}
    with open(source, newline="") as f:
        for row in csv.DictReader(f):
            minute = int(row["at_s"]) / 60
            rss[row["process"]].append((minute, int(row["rss_kib"]) / 1024))
            files[minute] = files.get(minute, 0) + int(row["open_files"])
            sockets[minute] = sockets.get(minute, 0) + int(row["sockets"])
            connections[minute] = int(row["postgres_connections"])
            p99[minute] = int(row["p99_ms"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for name, points in sorted(rss.items()):
        axes[0][0].plot(*zip(*points), label=name)
    axes[0][0].set_title("resident memory per process (MiB)")
    axes[0][0].legend(fontsize="small", ncol=2)
    axes[0][1].plot(list(files), list(files.values()), label="open files")
    axes[0][1].plot(list(sockets), list(sockets.values()), label="sockets")
    axes[0][1].set_title("open files and sockets, all processes")
    axes[0][1].legend(fontsize="small")
    axes[1][0].plot(list(connections), list(connections.values()))
    axes[1][0].set_title("PostgreSQL client connections")
    axes[1][1].plot(list(p99), list(p99.values()))
    axes[1][1].set_title("p99 latency of the interval's acknowledged operations (ms)")
    for ax in axes.flat:
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(target, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
