import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { Redis } from "ioredis";
import { batchRedisWrites, sendBatchedWrites } from "./redis-write-batching.ts";

const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";

/** Counts the writes the connection's socket hands to the OS layer (`_write` or `_writev`). */
function countSocketWrites(redis: Redis): { writes: number } {
  const socket = (redis as unknown as { stream: Socket }).stream as Socket & {
    _write: (...args: unknown[]) => void;
    _writev: (...args: unknown[]) => void;
  };
  const counter = { writes: 0 };
  for (const method of ["_write", "_writev"] as const) {
    const original = socket[method];
    socket[method] = function (this: unknown, ...args: unknown[]) {
      counter.writes++;
      return original.apply(this, args);
    };
  }
  return counter;
}

Deno.test("the commands of one turn go out in one socket write, and each gets its reply", async () => {
  const redis = batchRedisWrites(new Redis(REDIS_URL));
  const prefix = `test:write-batching:${crypto.randomUUID()}:`;
  try {
    await redis.ping();
    const counter = countSocketWrites(redis);
    const keys = Array.from({ length: 10 }, (_, i) => `${prefix}${i}`);
    await Promise.all(keys.map((key, i) => redis.set(key, String(i), "PX", 10_000)));
    assert.equal(counter.writes, 1);
    const values = await Promise.all(keys.map((key) => redis.get(key)));
    assert.deepEqual(values, keys.map((_, i) => String(i)));
    assert.equal(counter.writes, 2, "a later turn's commands are a write of their own");
  } finally {
    redis.disconnect();
  }
});

Deno.test("sendBatchedWrites sends the turn's commands at once; the turn's later ones still go out", async () => {
  const redis = batchRedisWrites(new Redis(REDIS_URL));
  try {
    await redis.ping();
    const counter = countSocketWrites(redis);
    const first = Promise.all([redis.ping(), redis.ping()]);
    assert.equal(counter.writes, 0, "held until the turn ends");
    sendBatchedWrites(redis);
    assert.equal(counter.writes, 1, "sent now, in one write");
    const later = Promise.all([redis.ping(), redis.ping()]);
    assert.deepEqual(await first, ["PONG", "PONG"]);
    assert.deepEqual(await later, ["PONG", "PONG"]);
    assert.equal(counter.writes, 2, "the commands issued after it went out at the turn's end, together");
    await Promise.all([redis.ping(), redis.ping()]);
    assert.equal(counter.writes, 3, "the next turn batches as before");
  } finally {
    redis.disconnect();
  }
});

Deno.test("a reconnected socket batches its writes too", async () => {
  const redis = batchRedisWrites(new Redis(REDIS_URL));
  try {
    await redis.ping();
    const reconnected = new Promise((resolve) => redis.once("ready", resolve));
    redis.disconnect(true);
    await reconnected;
    const counter = countSocketWrites(redis);
    const replies = await Promise.all(Array.from({ length: 5 }, () => redis.ping()));
    assert.deepEqual(replies, Array(5).fill("PONG"));
    assert.equal(counter.writes, 1);
  } finally {
    redis.disconnect();
  }
});
