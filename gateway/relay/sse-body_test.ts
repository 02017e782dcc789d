import assert from "node:assert/strict";
import { SSEBody } from "./sse-body.ts";

const decoder = new TextDecoder();

Deno.test("a write waits until the reader takes it; the reader gets every write in order", async () => {
  const body = new SSEBody();
  const reader = body.stream.getReader();
  let firstDone = false;
  const first = body.write("data: 1\n\n").then(() => firstDone = true);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(firstDone, false, "nobody has read yet");
  const chunk = await reader.read();
  assert.equal(decoder.decode(chunk.value), "data: 1\n\n");
  // A write made while the reader waits goes straight to it.
  const pending = reader.read();
  await first;
  await body.write("data: 2\n\n");
  assert.equal(decoder.decode((await pending).value), "data: 2\n\n");
  body.close();
  assert.equal((await reader.read()).done, true);
});

Deno.test("a client that goes away aborts: listeners run, a waiting write returns, later writes are dropped", async () => {
  const body = new SSEBody();
  const reader = body.stream.getReader();
  let aborts = 0;
  body.onAbort(() => aborts++);
  const waiting = body.write("data: never read\n\n");
  await reader.cancel();
  await waiting;
  assert.equal(body.aborted, true);
  assert.equal(aborts, 1);
  await body.write("data: late\n\n");
  body.abort();
  assert.equal(aborts, 1, "abort is told once");
});

Deno.test("the relay's abort ends the body for a client still reading", async () => {
  const body = new SSEBody();
  const reader = body.stream.getReader();
  const read = reader.read();
  await body.write("data: 1\n\n");
  assert.equal(decoder.decode((await read).value), "data: 1\n\n");
  body.abort();
  assert.equal((await reader.read()).done, true);
});
