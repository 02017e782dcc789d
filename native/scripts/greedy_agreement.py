"""Greedy agreement of two gptoss-cli runs over the same prompts.

    python3 greedy_agreement.py A.log B.log "label"

Each log holds gptoss-cli's "request i (finish): t t t ..." lines; prints how
many prompts gave identical tokens and how many tokens came before the first
difference. Exit status 1 when there is nothing to compare.
"""
import sys


def outputs(path):  # "request i (finish): t t t ..." -> [[t, ...], ...]
    return [line.split(":", 1)[1].split() for line in open(path) if line.startswith("request ")]


def agreed(a, b):  # tokens before the first difference
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


a, b, label = outputs(sys.argv[1]), outputs(sys.argv[2]), sys.argv[3]
if not a or len(a) != len(b):
    sys.exit(f"{label}: no comparable outputs ({len(a)} and {len(b)})")
same = sum(x == y for x, y in zip(a, b))
prefix = sum(agreed(x, y) for x, y in zip(a, b))
total = sum(len(y) for y in b)
print(f"{label}: {same}/{len(b)} prompts identical, "
      f"{prefix}/{total} tokens before the first difference ({100 * prefix / total:.1f} %)")
