/**
 * Automatic prefix caching end to end (gateway, worker, CPU engine, tiny
 * model): a tenant that repeats a long prompt prefix gets it from the cache
 * (usage.prompt_tokens_details.cached_tokens, and a much shorter time to the
 * answer), while another tenant sending the very same prompt gets neither the
 * hit nor its timing: the tenant salts the cache.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type OpenAI from "openai";
import { bootstrapTenant } from "../../gateway/tenancy/bootstrap.ts";
import { getTokenizer } from "../../shared/tokenizer.ts";
import { parsePrometheusText, sampleSum } from "../helpers/prometheus-text.ts";
import { MODEL_NAME, stackForSuite } from "../helpers/stack.ts";

/** A multiple of the engine's block size (16): only whole blocks are cached. */
const SHARED_TOKENS = 2048;
/** Plain policy text (the tenants' safety filters read every prompt). */
const policy = (lines: number) =>
  Array.from({ length: lines }, (_, i) => `Rule ${i}: a passenger on route ${i} may check ${i % 3 + 1} bags of ${20 + i % 9} kg.`)
    .join(" ");
const shared = getTokenizer().encode(policy(200)).slice(0, SHARED_TOKENS);
/** The shared prefix, then a short question of its own. */
const conversation = (turn: number) => [...shared, ...getTokenizer().encode(` Question ${turn}: how many bags may I check on route ${turn}?`)];

/** One token after `prompt`: the time is the time to the first token, plus the gateway's round trip. */
async function answer(client: OpenAI, prompt: number[]) {
  const start = performance.now();
  const data = await client.completions.create({ model: MODEL_NAME, prompt, max_tokens: 1 });
  return { ms: performance.now() - start, cached: data.usage!.prompt_tokens_details?.cached_tokens };
}

describe("prefix cache", () => {
  const suite = stackForSuite();
  let tenants = 0;
  async function otherTenant(): Promise<OpenAI> {
    const { apiKey } = await bootstrapTenant(suite.stack.redis, suite.stack.prefix, {
      tenantId: `other-${++tenants}`,
      settings: { requestsPerMinute: 1_000_000, tokensPerMinute: 1_000_000_000, concurrentRequests: 10_000 },
    });
    return suite.stack.client({ apiKey });
  }

  it("a tenant's repeated prefix is a hit; another tenant's identical prompt is neither a hit nor as fast", async (t) => {
    const a = suite.client;
    const b = await otherTenant();
    await answer(await otherTenant(), conversation(0).slice(-40)); // the first request's one-time costs
    const coldA = await answer(a, conversation(1));
    const warmA = await answer(a, conversation(2));
    const coldB = await answer(b, conversation(2)); // exactly tenant A's last prompt
    const warmB = await answer(b, conversation(3));
    const times = `cold A ${coldA.ms.toFixed(0)} ms, warm A ${warmA.ms.toFixed(0)} ms, ` +
      `cold B ${coldB.ms.toFixed(0)} ms, warm B ${warmB.ms.toFixed(0)} ms`;
    t.diagnostic(times);
    assert.equal(coldA.cached, 0);
    assert.equal(warmA.cached, SHARED_TOKENS);
    assert.equal(coldB.cached, 0, "another tenant's cached prompt is never a hit");
    assert.equal(warmB.cached, SHARED_TOKENS, "the second tenant's own prefix is");
    // A cold prefill of some 2 070 tokens costs many times the 20-token turn
    // (plus the stack's round trip); a margin of 3 leaves room for a noisy machine.
    assert.ok(coldA.ms > 3 * warmA.ms, times);
    assert.ok(coldB.ms > 3 * warmA.ms, `tenant B must not get tenant A's timing: ${times}`);

    const metrics = parsePrometheusText(await (await fetch((await suite.stack.workerMetricsUrls())[0])).text());
    assert.ok(sampleSum(metrics, "engine_prefix_cache_hits_tokens_total") >= 2 * SHARED_TOKENS);
    assert.ok(sampleSum(metrics, "engine_prefix_cache_blocks") >= SHARED_TOKENS / 16);
  });

  it("streams carry cached_tokens in the usage chunk, for completions and chat", async () => {
    const client = suite.client;
    const stream = await client.completions.create({
      model: MODEL_NAME,
      prompt: conversation(4),
      max_tokens: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) usage = chunk.usage ?? usage;
    assert.equal(usage?.prompt_tokens_details?.cached_tokens, SHARED_TOKENS);

    // Chat: the same long system message twice, with different user turns, from a tenant of its
    // own: harmony's system message is the same for every chat of the day, so a tenant that chatted
    // before (on a long-running stack) has its first blocks cached already.
    const system = policy(40);
    const fresh = await otherTenant();
    const chat = (user: string, stream: boolean) =>
      fresh.chat.completions.create({
        model: MODEL_NAME,
        messages: [{ role: "system", content: system }, { role: "user", content: user }],
        max_tokens: 2,
        ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
      });
    const first = (await chat("Where is my bag?", false)) as OpenAI.ChatCompletion;
    assert.equal(first.usage!.prompt_tokens_details?.cached_tokens, 0);
    const second = (await chat("Can I change my seat?", true)) as AsyncIterable<OpenAI.ChatCompletionChunk>;
    let chatUsage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of second) chatUsage = chunk.usage ?? chatUsage;
    const cached = chatUsage?.prompt_tokens_details?.cached_tokens ?? 0;
    assert.ok(cached >= 300 && cached % 16 === 0 && cached < chatUsage!.prompt_tokens, `cached ${cached}`);
  });
});
