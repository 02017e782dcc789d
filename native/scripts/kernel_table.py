#!/usr/bin/env python3
"""Per-kernel device time of the profiled decode steps, from nsys or ncu CSV.

    kernel_table.py KERNELS.csv STEPS STEP_MS LABEL

KERNELS.csv is `nsys stats --report cuda_gpu_kern_sum --format csv` or
`ncu --csv --metrics gpu__time_duration.sum` over STEPS profiled steps whose
wall time was STEP_MS each (the bench's figure). Prints, per step: kernels
launched, their summed device time, the rest of the step (gaps between
kernels: launch latency, host waits), and the ten costliest kernels.
"""
import csv
import sys
from collections import defaultdict


def read(path):
    # The profiled program's own output may come first (ncu writes to its stdout).
    lines = [line for line in open(path) if line.startswith('"')]
    rows = list(csv.reader(lines))
    head = rows[0]
    per = defaultdict(lambda: [0.0, 0])  # name -> [ns, instances]
    if "Total Time (ns)" in head:  # nsys
        t, n, k = head.index("Total Time (ns)"), head.index("Instances"), head.index("Name")
        for r in rows[1:]:
            per[r[k]][0] += float(r[t])
            per[r[k]][1] += int(r[n])
    else:  # ncu: one row per kernel launch and metric
        k, m, v, u = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value"), head.index("Metric Unit")
        scale = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "ns": 1.0, "us": 1e3, "ms": 1e6}
        for r in rows[1:]:
            if r[m] != "gpu__time_duration.sum":
                continue
            per[r[k]][0] += float(r[v].replace(",", "")) * scale.get(r[u], 1.0)
            per[r[k]][1] += 1
    return per


def main():
    path, steps, step_ms, label = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    per = read(path)
    total_ms = sum(ns for ns, _ in per.values()) / 1e6 / steps
    launches = sum(n for _, n in per.values()) / steps
    if step_ms <= 0:  # no bench figure in this run (stage bench skipped): shares of the kernel time
        step_ms = total_ms
    print(f"{label}: {launches:.0f} kernels a step, {total_ms:.3f} ms of kernel time of a {step_ms:.3f} ms step "
          f"({100 * total_ms / step_ms:.1f} %; gaps {step_ms - total_ms:.3f} ms)")
    for name, (ns, n) in sorted(per.items(), key=lambda kv: -kv[1][0])[:10]:
        short = name.split("(")[0][:60]
        print(f"  {ns / 1e6 / steps:8.3f} ms {100 * ns / 1e6 / steps / step_ms:5.1f} %  x{n / steps:5.1f}  {short}")


if __name__ == "__main__":
    main()
