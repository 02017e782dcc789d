/**
 * The relay's integrity checks against a real Redis: events arrive in order
 * through the shared subscriber; a gap, garbage, a worker error, a silent
 * worker or a missed deadline each end the stream with the right failure.
 */
import assert from "node:assert/strict";
import type { Failure } from "../errors.ts";
import { GatewayError } from "../errors.ts";
import { testRedis } from "../tenancy/test_support.ts";
import { EventHub } from "./event-hub.ts";
import { type EventStreamLimits, type ProgressEvent, RequestEventStream } from "./event-stream.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const start = (seq: number) => ({ seq, type: "start", workerId: "w" });
const delta = (seq: number, content: string, tokens: number) => ({ seq, type: "delta", content, reasoning: "", tokens });
const done = (seq: number, completionTokens: number) => ({
  seq,
  type: "done",
  finishReason: "stop",
  usage: { promptTokens: 3, completionTokens },
});

async function withStream(
  limits: { deadlineInMs?: number; idleTimeoutMs?: number; whileQueued?: EventStreamLimits["whileQueued"] },
  body: (stream: RequestEventStream, publish: (event: unknown) => Promise<void>, hub: EventHub) => Promise<void>,
) {
  const t = testRedis("event-stream");
  const hub = new EventHub(t.connect(), t.keys);
  await hub.listen();
  const requestId = crypto.randomUUID();
  const channel = t.keys.eventChannel(hub.gatewayId, requestId);
  const stream = await RequestEventStream.open(hub, requestId, {
    deadline: Date.now() + (limits.deadlineInMs ?? 10_000),
    idleTimeoutMs: limits.idleTimeoutMs ?? 10_000,
    whileQueued: limits.whileQueued,
  });
  try {
    await body(stream, async (event) => {
      await t.redis.publish(channel, typeof event === "string" ? event : JSON.stringify(event));
    }, hub);
  } finally {
    await stream.close();
    await t.close();
  }
}

async function drain(stream: RequestEventStream): Promise<ProgressEvent[]> {
  const events: ProgressEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

async function failureOf(stream: RequestEventStream): Promise<Failure> {
  try {
    await drain(stream);
  } catch (err) {
    assert.ok(err instanceof GatewayError);
    return err.failure;
  }
  assert.fail("the stream ended without a failure");
}

Deno.test("events arrive in order and the stream ends after done", async () => {
  await withStream({}, async (stream, publish) => {
    for (const e of [start(0), delta(1, "a", 1), delta(2, "b", 2), done(3, 2)]) await publish(e);
    const events = await drain(stream);
    assert.deepEqual(events.map((e) => e.type), ["start", "delta", "delta", "done"]);
    assert.equal(stream.started, true);
  });
});

Deno.test("a lost event ends the stream with stream_integrity, after what came before it", async () => {
  await withStream({}, async (stream, publish) => {
    for (const e of [start(0), delta(1, "a", 1), delta(3, "c", 3)]) await publish(e);
    assert.deepEqual((await stream.next()).value?.type, "start");
    assert.deepEqual((await stream.next()).value?.type, "delta");
    const failure = await failureOf(stream);
    assert.equal(failure.reason, "stream_integrity");
    assert.match((failure as { detail: string }).detail, /event 2 was lost \(received 3\)/);
  });
});

Deno.test("a duplicated event is a gap too", async () => {
  await withStream({}, async (stream, publish) => {
    for (const e of [start(0), delta(1, "a", 1), delta(1, "a", 1)]) await publish(e);
    assert.equal((await failureOf(stream)).reason, "stream_integrity");
  });
});

Deno.test("garbage on the channel ends the stream with stream_integrity", async () => {
  await withStream({}, async (stream, publish) => {
    await publish(start(0));
    await publish("not json");
    assert.equal((await failureOf(stream)).reason, "stream_integrity");
  });
  await withStream({}, async (stream, publish) => {
    await publish({ seq: 0, type: "delta", content: 5 });
    assert.equal((await failureOf(stream)).reason, "stream_integrity");
  });
});

Deno.test("a worker error event becomes worker_error with its code and message", async () => {
  await withStream({}, async (stream, publish) => {
    await publish(start(0));
    await publish({ seq: 1, type: "error", code: "backend", message: "kernel failed" });
    assert.deepEqual(await failureOf(stream), { reason: "worker_error", code: "backend", message: "kernel failed" });
  });
});

Deno.test("a worker that goes silent after starting times out", async () => {
  await withStream({ idleTimeoutMs: 150 }, async (stream, publish) => {
    await publish(start(0));
    await publish(delta(1, "a", 1));
    const t0 = Date.now();
    const failure = await failureOf(stream);
    assert.deepEqual(failure, {
      reason: "timeout",
      detail: "the worker running the request went silent and no other worker resumed it within 150 ms",
    });
    assert.ok(Date.now() - t0 >= 100);
  });
});

Deno.test("waiting in the queue is bounded by the deadline, not the idle timeout", async () => {
  await withStream({ deadlineInMs: 300, idleTimeoutMs: 50 }, async (stream) => {
    const t0 = Date.now();
    const failure = await failureOf(stream);
    assert.deepEqual(failure, { reason: "timeout", detail: "the request ran past its deadline" });
    assert.ok(Date.now() - t0 >= 250, "the idle timeout must not apply before the worker starts");
  });
});

Deno.test("while queued, a failing check ends the stream; once started, it is no longer run", async () => {
  let checks = 0;
  const check = () => Promise.resolve(++checks >= 3 ? { reason: "no_worker" as const, model: "m" } : undefined);
  await withStream({ whileQueued: { everyMs: 30, check } }, async (stream) => {
    assert.deepEqual(await failureOf(stream), { reason: "no_worker", model: "m" });
    assert.equal(checks, 3);
  });

  checks = 0;
  await withStream({ whileQueued: { everyMs: 30, check } }, async (stream, publish) => {
    await publish(start(0));
    assert.equal((await stream.next()).value?.type, "start");
    const next = stream.next();
    await sleep(150);
    await publish(done(1, 0));
    assert.equal((await next).value?.type, "done");
    assert.equal(checks, 0, "the queued check stops once the worker started");
  });
});

Deno.test("closing unsubscribes: the shared subscriber holds no channel afterwards", async () => {
  await withStream({}, async (stream, _publish, hub) => {
    assert.equal(hub.size, 1);
    await stream.close();
    assert.equal(hub.size, 0);
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
  });
});

Deno.test("many streams share one subscriber and each gets only its own events", async () => {
  const t = testRedis("event-hub");
  const hub = new EventHub(t.connect(), t.keys);
  await hub.listen();
  try {
    const ids = Array.from({ length: 20 }, (_, i) => `r${i}`);
    const channels = ids.map((id) => t.keys.eventChannel(hub.gatewayId, id));
    const streams = await Promise.all(
      ids.map((id) => RequestEventStream.open(hub, id, { deadline: Date.now() + 5000, idleTimeoutMs: 5000 })),
    );
    await Promise.all(channels.map(async (ch, i) => {
      for (const e of [start(0), delta(1, `text ${i}`, 1), done(2, 1)]) await t.redis.publish(ch, JSON.stringify(e));
    }));
    const texts = await Promise.all(streams.map(async (s) => {
      const events = await drain(s);
      return events.flatMap((e) => e.type === "delta" ? [e.content] : []).join("");
    }));
    assert.deepEqual(texts, channels.map((_, i) => `text ${i}`));
    await Promise.all(streams.map((s) => s.close()));
    assert.equal(hub.size, 0);
  } finally {
    await t.close();
  }
});

Deno.test("a gateway hears only its own requests' channels, and reports events nobody reads", async () => {
  const t = testRedis("event-hub-two");
  const orphans: string[] = [];
  const ours = new EventHub(t.connect(), t.keys, { onOrphan: (requestId) => orphans.push(requestId) });
  const theirs = new EventHub(t.connect(), t.keys);
  await Promise.all([ours.listen(), theirs.listen()]);
  try {
    const heard: string[] = [];
    const stop = await ours.subscribe("r", (message) => heard.push(message));
    // The same request id under the other gateway: not ours.
    assert.equal(await t.redis.publish(t.keys.eventChannel(theirs.gatewayId, "r"), "theirs"), 1);
    assert.equal(await t.redis.publish(t.keys.eventChannel(ours.gatewayId, "r"), "ours"), 1);
    for (let i = 0; i < 50 && heard.length === 0; i++) await sleep(10);
    await sleep(20);
    assert.deepEqual(heard, ["ours"]);
    stop();
    assert.equal(ours.size, 0);
    // Closed, yet its worker goes on (Redis still counts this gateway as a receiver): told once.
    for (const n of [1, 2]) await t.redis.publish(t.keys.eventChannel(ours.gatewayId, "r"), `late ${n}`);
    for (let i = 0; i < 50 && orphans.length === 0; i++) await sleep(10);
    await sleep(20);
    assert.deepEqual({ heard, orphans }, { heard: ["ours"], orphans: ["r"] });
    // Closed after a cancel that reached Redis: its late events call for no second one.
    const stopCancelled = await ours.subscribe("c", () => {});
    stopCancelled({ cancelled: true });
    await t.redis.publish(t.keys.eventChannel(ours.gatewayId, "c"), "late");
    await sleep(50);
    assert.deepEqual(orphans, ["r"]);
  } finally {
    await t.close();
  }
});

Deno.test("after the subscriber reconnects, a new request waits for the pattern's confirmation", async () => {
  const t = testRedis("event-hub-reconnect");
  const subscriber = t.connect();
  // Its id, read before subscriber mode: the test kills this connection only (Redis is shared).
  const id = await subscriber.client("ID");
  const hub = new EventHub(subscriber, t.keys);
  await hub.listen();
  try {
    const closed = new Promise((resolve) => subscriber.once("close", resolve));
    await t.redis.client("KILL", "ID", String(id));
    await closed;
    assert.equal(hub.listening, false);
    const heard: string[] = [];
    const stop = await hub.subscribe("r", (message) => heard.push(message));
    // Resolved only once the pattern stands again: what is published now is heard.
    assert.equal(hub.listening, true);
    assert.equal(await t.redis.publish(t.keys.eventChannel(hub.gatewayId, "r"), "after"), 1);
    for (let i = 0; i < 50 && heard.length === 0; i++) await sleep(10);
    assert.deepEqual(heard, ["after"]);
    stop();
  } finally {
    await t.close();
  }
});
