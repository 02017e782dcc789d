/**
 * A client that leaves mid-stream gets its sequence cancelled in the engine,
 * its KV blocks freed, and the worker serves the next request. Takes the
 * default stack, so it also runs against a GPU host's stack (STACK_URL).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { eventually } from "../helpers/eventually.ts";
import { MODEL_NAME, stackForSuite } from "../helpers/stack.ts";

describe("cancellation", () => {
  const suite = stackForSuite();

  it("a client that disconnects mid-stream has its sequence cancelled and its KV blocks freed", async () => {
    const stream = await suite.client.completions.create({
      model: MODEL_NAME,
      prompt: "Count forever:",
      max_tokens: 3000,
      stream: true,
    });
    await stream[Symbol.asyncIterator]().next();
    await eventually("the engine reports the running sequence", 5_000, async () => {
      const beats = await suite.stack.heartbeats();
      return beats.some((b) => b.running === 1 && b.kvBlocksUsed > 0);
    });
    const abortedAt = Date.now();
    stream.controller.abort();
    await eventually("the engine has no sequence and no used KV block", 5_000, async () => {
      const beats = await suite.stack.heartbeats();
      return beats.every((b) => b.at > abortedAt && b.running === 0 && b.kvBlocksUsed === 0);
    });

    const next = await suite.client.completions.create({ model: MODEL_NAME, prompt: "Hi", max_tokens: 2 });
    assert.ok(next.usage!.completion_tokens >= 1, "the worker serves the next request");
  });
});
