/**
 * Many streams at once through one gateway and one worker: every stream ends
 * with its finish chunk, its usage chunk and [DONE], with usage that matches
 * what it asked for; afterwards the gateway holds no channel subscription.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type OpenAI from "openai";
import { renderChat } from "../../shared/harmony.ts";
import { getTokenizer } from "../../shared/tokenizer.ts";
import { gatewayEventListeners, MODEL_NAME, stackForSuite } from "../helpers/stack.ts";

const STREAMS = 64;
const MAX_TOKENS = 8;

describe("concurrency", () => {
  const suite = stackForSuite();

  it(`${STREAMS} concurrent streams all complete with correct usage`, async () => {
    const today = new Date().toISOString().slice(0, 10);
    const results = await Promise.all(Array.from({ length: STREAMS }, async (_, i) => {
      const question = `Question number ${i}: ${"why ".repeat(i % 7)}?`;
      const stream = await suite.client.chat.completions.create({
        model: MODEL_NAME,
        messages: [{ role: "user", content: question }],
        max_tokens: MAX_TOKENS,
        seed: i,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks: OpenAI.ChatCompletionChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      const expectedPrompt = renderChat(getTokenizer(), [{ role: "user", content: question }], {
        reasoningEffort: "medium",
        currentDate: today,
      }).length;
      return { chunks, expectedPrompt };
    }));

    assert.equal(new Set(results.map((r) => r.chunks[0].id)).size, STREAMS, "every stream has its own id");
    for (const { chunks, expectedPrompt } of results) {
      assert.equal(chunks[0].choices[0].delta.role, "assistant");
      const finish = chunks.at(-2)!.choices[0].finish_reason;
      assert.ok(finish === "stop" || finish === "length");
      const usage = chunks.at(-1)!.usage!;
      assert.equal(usage.prompt_tokens, expectedPrompt);
      assert.ok(usage.completion_tokens >= 1 && usage.completion_tokens <= MAX_TOKENS);
      if (finish === "length") assert.equal(usage.completion_tokens, MAX_TOKENS);
      assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    }
    assert.equal(await gatewayEventListeners(suite.stack), 0, "every stream stopped listening");
  });
});
