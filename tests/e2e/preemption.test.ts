/**
 * A KV cache too small for the batch: requests queue, sequences are preempted
 * and recomputed, and every greedy completion is still the one a roomy
 * one-rank worker gives - with the engine on one rank and sharded over two
 * (ENGINE_TP=2, CPU backend: both ranks in the worker's process).
 * (Leaving mid-stream at either size: cancellation.test.ts; SIGTERM:
 * faults/worker-shutdown.test.ts.)
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Stack, startStack } from "../helpers/stack.ts";
import { openStream } from "../helpers/sse-client.ts";

// Token prompts of 3..90 tokens (the tiny model's sliding window is 16).
const PROMPTS = Array.from(
  { length: 12 },
  (_, i) => Array.from({ length: 3 + (i * 29) % 88 }, (_, j) => (j * 7919 + i * 104729 + 17) % 200000),
);
const MAX_TOKENS = 12;

async function greedyTexts(s: Stack): Promise<string[]> {
  return await Promise.all(PROMPTS.map(async (prompt) => {
    const end = await (await openStream({
      url: s.url,
      apiKey: s.apiKey,
      body: { prompt, max_tokens: MAX_TOKENS, temperature: 0 },
    })).ended;
    assert.ok(end.done, JSON.stringify(end));
    assert.equal(end.usage?.completion_tokens, MAX_TOKENS);
    return end.text;
  }));
}

describe("preemption under a small KV cache", () => {
  let roomy: Stack;
  let expected: string[];
  before(async () => {
    roomy = await startStack({ workerEnv: { ENGINE_TP: "1" } });
    expected = await greedyTexts(roomy);
  });
  after(async () => await roomy?.stop());

  for (const tp of [1, 2]) {
    test(`ENGINE_TP=${tp}: queued and preempted, the roomy one-rank completions`, async () => {
      const small = await startStack({
        workerEnv: {
          ENGINE_TP: String(tp),
          // 14 full-attention blocks of 16 tokens for 12 sequences of up to ~100 tokens.
          ENGINE_KV_CACHE_BYTES: String(160 * 1024),
          ENGINE_MAX_BATCHED_TOKENS: "48",
        },
      });
      try {
        assert.deepEqual(await greedyTexts(small), expected);
        const [beat] = await small.heartbeats();
        // Far fewer blocks than 12 sequences of ~100 tokens want (~7 each).
        assert.ok(beat.kvBlocksTotal < 64, `the cache is small: ${JSON.stringify(beat)}`);
      } finally {
        await small.stop();
      }
    });
  }
});
