/**
 * Clients that do not keep up with their stream, through the real app and a
 * real Redis with a scripted worker. The response body is read (or not) by the
 * test itself, so backpressure reaches the relay at once. Over TCP the kernel
 * first absorbs several megabytes (loopback send buffers autotune to ~4 MB
 * here), more than the tiny model writes in a test's time, so a real-process
 * version of this test would only measure the kernel.
 *
 * - a client that stops reading is dropped once a write to it has waited
 *   STREAM_WRITE_TIMEOUT_MS;
 * - a client that reads, but slower than the worker writes, is dropped once
 *   the events held for it pass STREAM_MAX_BUFFER_BYTES.
 * Dropped means: the generation is cancelled (cancel marker set, channel
 * unsubscribed) and the body ends without [DONE].
 */
import assert from "node:assert/strict";
import { sleep, TEST_MODEL, testGateway, type WorkerScript } from "../test_gateway.ts";

/** start, then `count` deltas of `bytes` characters, `pauseMs` apart, then done. */
function flood(count: number, bytes: number, pauseMs: number): WorkerScript {
  return async function* (job) {
    yield { type: "start", workerId: "w1" };
    for (let i = 1; i <= count; i++) {
      await sleep(pauseMs);
      yield { type: "delta", content: "x".repeat(bytes), reasoning: "", tokens: i };
    }
    yield {
      type: "done",
      finishReason: "length",
      usage: { promptTokens: job.promptTokenIds.length, completionTokens: count },
    };
  };
}

const request = { model: TEST_MODEL, messages: [{ role: "user", content: "hi" }], stream: true };

/** Polls until the gateway has cancelled `requestId` (marker set, no longer listened for). */
async function cancelled(
  g: Awaited<ReturnType<typeof testGateway>>,
  requestId: string,
  timeoutMs: number,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const marker = await g.t.redis.exists(g.t.keys.cancelMarker(requestId));
    if (marker === 1 && g.hub.size === 0) return;
    if (Date.now() > deadline) throw new Error(`not cancelled within ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function rest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    text += decoder.decode(r.value);
  }
  return text;
}

Deno.test("a client that stops reading is dropped after the write timeout", async () => {
  const g = await testGateway("slow-stalled", {
    config: { STREAM_WRITE_TIMEOUT_MS: 300, STREAM_MAX_BUFFER_BYTES: 1 << 30 },
  });
  try {
    await g.heartbeat();
    await g.startWorker(flood(1000, 1000, 5));
    const res = await g.post("/v1/chat/completions", request);
    const requestId = res.headers.get("x-request-id")!;
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk; nothing more is read for now
    const stalledAt = Date.now();
    await cancelled(g, requestId, 3_000);
    const droppedAfter = Date.now() - stalledAt;
    assert.ok(
      droppedAfter >= 250 && droppedAfter < 2_000,
      `dropped ${droppedAfter} ms after the client stalled`,
    );
    assert.doesNotMatch(await rest(reader), /\[DONE\]/);
  } finally {
    await g.close();
  }
});

Deno.test("a client reading slower than the worker writes is dropped at the buffer bound", async () => {
  const maxBufferedBytes = 64 * 1024;
  const g = await testGateway("slow-reader", {
    config: { STREAM_WRITE_TIMEOUT_MS: 60_000, STREAM_MAX_BUFFER_BYTES: maxBufferedBytes },
  });
  try {
    await g.heartbeat();
    await g.startWorker(flood(2000, 2000, 1));
    const res = await g.post("/v1/chat/completions", request);
    const requestId = res.headers.get("x-request-id")!;
    const reader = res.body!.getReader();
    const startedAt = Date.now();
    let received = "";
    const decoder = new TextDecoder();
    // One chunk every 50 ms: far slower than the worker writes, yet every write completes.
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      received += decoder.decode(r.value);
      await sleep(50);
    }
    await cancelled(g, requestId, 2_000);
    assert.ok(Date.now() - startedAt < 10_000, "dropped long before the write timeout");
    assert.doesNotMatch(received, /\[DONE\]/);
    assert.ok(
      received.length < 2000 * 2000 / 4,
      `the client got ${received.length} bytes, far from the whole answer`,
    );
  } finally {
    await g.close();
  }
});
