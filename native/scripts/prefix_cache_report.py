"""Summarises the prefix-cache stage of gpu_check_bench.sh.

    prefix_cache_report.py TTFT_LOG BATCH_LOG

Each log line is "<words> <gptoss-cli --json report>": TTFT_LOG has "ttft cold"
and "ttft warm" runs (a 2048-token shared prompt + 50-token turn, one token),
BATCH_LOG has "batch32 enable" and "batch32 no-enable" (32 such conversations
at once). Prints the medians, the warm/cold ratio and the throughput ratio
beside the issue's goals (<= 0.15 and >= 2).
"""
import json
import statistics
import sys


def runs(path):
    """[(words, report)] of a log; an unreadable line is reported, not fatal."""
    out = []
    for line in open(path):
        words, _, report = line.partition("{")
        try:
            out.append((words.split(), json.loads("{" + report)))
        except ValueError:
            print(f"prefix cache: unreadable run in {path}: {line.strip()[:200]}")
    return out


ttft = runs(sys.argv[1])
cold = [r["ttft_max_s"] for words, r in ttft if words[1] == "cold"]
warm = [r for words, r in ttft if words[1] == "warm"]
if cold and warm:
    c = statistics.median(cold)
    w = statistics.median(r["ttft_max_s"] for r in warm)
    print(f"prefix cache 20b TTFT 2048+50: cold {1e3 * c:.1f} ms, warm {1e3 * w:.1f} ms, warm/cold {w / c:.3f} "
          f"(goal <= 0.15; cached tokens {[r['cached_tokens'] for r in warm]})")
batch = {words[1]: r for words, r in runs(sys.argv[2])}
if "enable" in batch and "no-enable" in batch:
    on, off = batch["enable"], batch["no-enable"]
    ratio = on["output_tokens_per_s"] / off["output_tokens_per_s"]
    print(f"prefix cache 20b 32 conversations x 128 tokens: output {on['output_tokens_per_s']:.0f} tok/s on, "
          f"{off['output_tokens_per_s']:.0f} tok/s off, {ratio:.2f}x (goal >= 2); "
          f"ttft max {1e3 * on['ttft_max_s']:.0f} ms on, {1e3 * off['ttft_max_s']:.0f} ms off")
