#!/usr/bin/env node
// Automatic prefix caching on the CPU engine: a 2 048-token shared system
// prompt plus a 50-token user turn, through gptoss-cli (the C API, no Node in
// the measured process).
//
//   node bench/prefix-cache.mjs [--threads N] [--repeat N] [--conversations N] [--max-tokens N]
//
// TTFT, per model, batch 1, one token: cold (after an unrelated request of the
// same length), warm (after a request with the same prefix and another turn),
// and the same warm run with --no-enable-prefix-caching; the median of
// --repeat runs (default 3).
// Throughput, tiny model: --conversations (default 32) of that shape at once
// after the prefix is cached, --max-tokens (default 32) each, output tokens/s
// with caching on and off. Prints a table and writes bench/results/prefix-cache.json.
import { buildNative } from "../scripts/build-native.mjs";
import { cliReport, ensureModel, numberArg, printTable, writeResult } from "./lib/native-bench.mjs";

const threads = numberArg("threads", 0);
const repeat = numberArg("repeat", 3);
const conversations = numberArg("conversations", 32);
const maxTokens = numberArg("max-tokens", 32);
const SHAPE = ["--shared-prefix", "2048", "--random-prompt", "50"];

const models = [
  { name: "tiny", genArgs: ["--preset", "tiny"] },
  { name: "small", genArgs: ["--preset", "small"] },
];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (s) => Number((s * 1e3).toFixed(1));

await buildNative({ quiet: true });
const ttft = [];
const throughput = [];
for (const model of models) {
  const dir = ensureModel(model);
  const cli = (args) => cliReport(["--model", dir, "--threads", String(threads), ...SHAPE, ...args]);
  const ttftOf = (args) => {
    const runs = Array.from({ length: repeat }, () => cli(["--max-tokens", "1", ...args]));
    return { ttft_s: median(runs.map((r) => r.ttft_max_s)), cached_tokens: runs[0].cached_tokens };
  };
  const cold = ttftOf(["--warm-up", "unrelated"]);
  const warm = ttftOf(["--warm-up", "prefix"]);
  const off = ttftOf(["--warm-up", "prefix", "--no-enable-prefix-caching"]);
  ttft.push({
    model: model.name,
    cold_ms: ms(cold.ttft_s),
    warm_ms: ms(warm.ttft_s),
    warm_caching_off_ms: ms(off.ttft_s),
    warm_cached_tokens: warm.cached_tokens,
    warm_over_cold: Number((warm.ttft_s / cold.ttft_s).toFixed(3)),
  });
  if (model.name !== "tiny") continue;
  const batch = ["--batch", String(conversations), "--max-tokens", String(maxTokens), "--warm-up", "prefix"];
  const on = cli(batch);
  const offBatch = cli([...batch, "--no-enable-prefix-caching"]);
  throughput.push({
    model: model.name,
    conversations,
    max_tokens: maxTokens,
    on_output_tokens_per_s: on.output_tokens_per_s,
    off_output_tokens_per_s: offBatch.output_tokens_per_s,
    on_ttft_max_ms: ms(on.ttft_max_s),
    off_ttft_max_ms: ms(offBatch.ttft_max_s),
    speedup: Number((on.output_tokens_per_s / offBatch.output_tokens_per_s).toFixed(2)),
  });
}

console.log(`TTFT, 2048-token shared prompt + 50-token turn, batch 1 (median of ${repeat}):`);
printTable(
  ["model", "cold ms", "warm ms", "warm, caching off ms", "cached tokens", "warm / cold"],
  ttft.map((r) => [r.model, r.cold_ms, r.warm_ms, r.warm_caching_off_ms, r.warm_cached_tokens, r.warm_over_cold]),
);
console.log(`\n${conversations} conversations of that shape at once, ${maxTokens} tokens each, prefix cached first:`);
printTable(
  ["model", "output tok/s on", "output tok/s off", "ttft max ms on", "ttft max ms off", "speedup"],
  throughput.map((r) => [r.model, r.on_output_tokens_per_s, r.off_output_tokens_per_s, r.on_ttft_max_ms, r.off_ttft_max_ms, r.speedup]),
);
writeResult("prefix-cache", { threads, repeat, ttft, throughput });
