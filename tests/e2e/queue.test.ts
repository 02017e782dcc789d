/**
 * Queueing end to end, on a worker that runs one sequence at a time so that
 * later requests really wait: keep-alives while queued, a client that leaves
 * (streaming or not) is removed from the queue, and a full queue is a 503.
 * (Leaving mid-stream: cancellation.test.ts.)
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import OpenAI from "openai";
import { MODEL_NAME, type Stack, startStack } from "../helpers/stack.ts";

/** Long enough to still be running when the test is done with it. */
const LONG = { model: MODEL_NAME, prompt: "Count forever:", max_tokens: 3000, stream: true } as const;

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(25);
  }
}

describe("queue", () => {
  let stack: Stack;
  let client: OpenAI;
  let queue: Queue;
  const waiting = () => queue.getJobCountByTypes("waiting", "prioritized");

  before(async () => {
    stack = await startStack({
      workerEnv: { ENGINE_MAX_NUM_SEQS: "1" },
      gatewayEnv: { KEEPALIVE_MS: "100", QUEUE_MAX_WAITING: "2" },
    });
    client = stack.client();
    queue = new Queue(stack.keys.queueName, { connection: stack.redis, prefix: stack.keys.bullPrefix });
  });
  after(async () => {
    await queue?.close();
    await stack?.stop();
  });

  /** Starts a long stream and resolves once its first text arrived (the worker is running it). */
  async function running() {
    const stream = await client.completions.create(LONG);
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    return stream;
  }

  it("a queued request gets keep-alives, and leaving removes it from the queue", async () => {
    const busy = await running();
    const abort = new AbortController();
    const res = await fetch(`${stack.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL_NAME, messages: [{ role: "user", content: "hi" }], stream: true }),
      signal: abort.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    assert.equal(first, ": keep-alive\n\n", "a queued stream hears keep-alives, no chunks");
    assert.equal(await waiting(), 1);

    abort.abort();
    await until("the queued job is removed", async () => (await waiting()) === 0, 2_000);
    busy.controller.abort();
  });

  it("a non-streaming client that leaves while queued is removed from the queue", async () => {
    const busy = await running();
    const abort = new AbortController();
    const pending = fetch(`${stack.baseURL}/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL_NAME, prompt: "wait for me", max_tokens: 2 }),
      signal: abort.signal,
    }).catch((err: Error) => err);
    await until("the request waits in the queue", async () => (await waiting()) === 1);

    abort.abort();
    assert.equal((await pending as Error).name, "AbortError");
    await until("the queued job is removed", async () => (await waiting()) === 0, 2_000);
    busy.controller.abort();
  });

  it("the gateway never prints Deno's legacy request.signal warning", () => {
    // The tests above completed non-streaming requests, each watching its request's signal: under
    // Deno's legacy abort behaviour the first of them prints the warning.
    assert.doesNotMatch(stack.gateway.recentOutput(), /request\.signal aborts on successful responses/);
  });

  it("a full queue answers 503 overloaded with Retry-After", async () => {
    const busy = await running();
    const queued = [await client.completions.create(LONG), await client.completions.create(LONG)];
    await until("two jobs wait", async () => (await waiting()) === 2);
    try {
      await client.completions.create({ model: MODEL_NAME, prompt: "one more", max_tokens: 1 });
      assert.fail("the request was accepted");
    } catch (err) {
      assert.ok(err instanceof OpenAI.InternalServerError);
      assert.equal(err.status, 503);
      assert.equal(err.code, "overloaded");
      assert.equal(err.headers?.get("retry-after"), "1");
    }
    for (const stream of [...queued, busy]) stream.controller.abort();
    await until("the queue is empty", async () => (await waiting()) === 0, 2_000);
  });
});
