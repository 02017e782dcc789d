import assert from "node:assert/strict";
import type { Redis } from "ioredis";
import { redisKeys } from "../../shared/redis-keys.ts";
import { WorkerRegistry } from "./registry.ts";

/** The two reads the registry makes, answering one live worker and counting the round trips. */
function countingRedis() {
  const keys = redisKeys("registry-test");
  const heartbeat = {
    workerId: "w1",
    model: "m",
    maxModelLen: 4096,
    backend: "cpu",
    running: 0,
    waiting: 0,
    kvBlocksUsed: 0,
    kvBlocksTotal: 1,
    at: Date.now(),
  };
  const counts = { reads: 0 };
  const redis = {
    zrangebyscore: () => {
      counts.reads++;
      return Promise.resolve([keys.worker("w1"), String(Date.now())]);
    },
    mget: () => Promise.resolve([JSON.stringify(heartbeat)]),
  } as unknown as Redis;
  return { redis, keys, counts };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("keepFresh: the request path finds a fresh snapshot and waits for no read", async () => {
  const { redis, keys, counts } = countingRedis();
  const registry = new WorkerRegistry(redis, keys, { staleMs: 5_000, refreshMs: 40 });
  const stop = registry.keepFresh();
  try {
    await sleep(130);
    assert.ok(counts.reads >= 3, `background reads: ${counts.reads}`);
    const before = counts.reads;
    const snapshot = await registry.snapshot();
    assert.equal(counts.reads, before, "snapshot() read Redis itself");
    assert.equal(snapshot.models.get("m")?.liveWorkers, 1);
  } finally {
    stop();
  }
  const stopped = counts.reads;
  await sleep(100);
  assert.equal(counts.reads, stopped, "reads went on after stop");
});

Deno.test("without keepFresh a stale snapshot is read again on the request path", async () => {
  const { redis, keys, counts } = countingRedis();
  const registry = new WorkerRegistry(redis, keys, { staleMs: 5_000, refreshMs: 20 });
  await registry.snapshot();
  await sleep(40);
  await registry.snapshot();
  assert.equal(counts.reads, 2);
});
