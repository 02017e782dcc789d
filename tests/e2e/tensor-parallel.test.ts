/**
 * A worker whose engine is sharded over two ranks (ENGINE_TP=2, CPU backend:
 * both ranks in the worker's process) serves what a one-rank worker serves:
 * the same greedy completions for prompts across the sliding window, with
 * a KV cache small enough that requests queue and are preempted; and a
 * client that goes away mid-stream frees its engine slot.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Stack, startStack } from "../helpers/stack.ts";
import { openStream } from "../helpers/sse-client.ts";
import { eventually } from "../helpers/eventually.ts";

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

describe("a worker with ENGINE_TP=2", () => {
  let one: Stack, two: Stack, roomy: Stack;
  before(async () => {
    one = await startStack({ workerEnv: { ENGINE_TP: "1" } });
    two = await startStack({
      workerEnv: {
        ENGINE_TP: "2",
        // 14 full-attention blocks of 16 tokens for 12 sequences of up to ~100 tokens.
        ENGINE_KV_CACHE_BYTES: String(160 * 1024),
        ENGINE_MAX_BATCHED_TOKENS: "48",
      },
    });
    roomy = await startStack({ workerEnv: { ENGINE_TP: "2" } });
  });
  after(async () => {
    await one?.stop();
    await two?.stop();
    await roomy?.stop();
  });

  test("gives the greedy completions of one rank, queued and preempted", async () => {
    assert.deepEqual(await greedyTexts(two), await greedyTexts(one));
  });

  test("frees the engine slot of a client that goes away", async () => {
    // 4000 tokens take the sharded tiny model several seconds; the slot must
    // be free well before.
    const stream = await openStream({ url: roomy.url, apiKey: roomy.apiKey, body: { max_tokens: 4000 } });
    await stream.textAtLeast(1);
    stream.abort();
    await stream.ended;
    await eventually("the engine is idle", 1_500, async () => {
      const [beat] = await roomy.heartbeats();
      return beat.running === 0 && beat.waiting === 0;
    });
    const next = await (await openStream({ url: roomy.url, apiKey: roomy.apiKey, body: { max_tokens: 5 } })).ended;
    assert.ok(next.done, JSON.stringify(next));
  });
});
