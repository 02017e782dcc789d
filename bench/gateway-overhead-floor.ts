/**
 * The measurement floor of bench/gateway-overhead.ts and bench/gateway-vs-peer.ts: a server that
 * answers a streaming chat completion at once, with the chunks the gateway sends for an answer of
 * `max_tokens` tokens (one chunk each), and does nothing else (no auth, no queue, no worker). It is
 * also the do-nothing OpenAI-style upstream the peer gateway forwards to. It runs on the gateway's
 * runtime and framework (Deno, Hono's streamSSE), so the same client's time to first token against
 * it is what the client, the HTTP exchange and the machine cost before any gateway work: the
 * "direct to the provider" side of the usual overhead measurement (through the gateway minus
 * direct).
 *
 *   node_modules/.bin/deno run --allow-net bench/gateway-overhead-floor.ts
 *
 * Prints `floor listening on <port>`.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";

const app = new Hono();
app.post("/v1/chat/completions", async (c) => {
  const request = await c.req.json();
  const chunk = (delta: object, finishReason: string | null = null) =>
    JSON.stringify({
      id: "chatcmpl-floor",
      object: "chat.completion.chunk",
      created: Math.floor(Date.now() / 1000),
      model: request.model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    });
  return streamSSE(c, async (stream) => {
    await stream.writeSSE({ data: chunk({ role: "assistant", content: "" }) });
    for (let i = 0; i < (request.max_tokens ?? 1); i++) {
      await stream.writeSSE({ data: chunk({ content: "ok " }) });
    }
    await stream.writeSSE({ data: chunk({}, "length") });
    await stream.writeSSE({ data: "[DONE]" });
  });
});

Deno.serve({
  port: 0,
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(`floor listening on ${port}`),
}, app.fetch);
