/**
 * The registry reads the workers' set and their heartbeats in one round trip, guessing the ids from
 * its last read: these check that every change of the set (a worker joins, leaves, goes stale)
 * and of a heartbeat (a new context length) shows on the next read, as with two ordered reads.
 */
import assert from "node:assert/strict";
import { testRedis } from "../tenancy/test_support.ts";
import { writeHeartbeat } from "../test_gateway.ts";
import { WorkerRegistry } from "./registry.ts";

const STALE_MS = 2_000;

Deno.test("registry: joins, leaves, staleness and changed heartbeats show on the next read", async () => {
  const t = testRedis("registry");
  const beat = (workerId: string, model: string, maxModelLen: number, at = Date.now()) =>
    writeHeartbeat(t, { workerId, model, maxModelLen, at });
  const registry = new WorkerRegistry(t.redis, t.keys, { staleMs: STALE_MS, refreshMs: 60_000 });
  const read = async () => {
    const { models, liveWorkers } = await registry.refresh();
    return {
      liveWorkers,
      models: Object.fromEntries(
        [...models.values()].map((m) => [m.id, [m.maxModelLen, m.liveWorkers]]),
      ),
    };
  };
  try {
    assert.deepEqual(await read(), { liveWorkers: 0, models: {} });

    await beat("w1", "m", 512);
    assert.deepEqual(await read(), { liveWorkers: 1, models: { m: [512, 1] } });
    // Same set: the heartbeats fetched with it are the current ones.
    await beat("w1", "m", 256);
    assert.deepEqual(await read(), { liveWorkers: 1, models: { m: [256, 1] } });

    await beat("w2", "m", 1024);
    await beat("w3", "other", 128);
    assert.deepEqual(await read(), { liveWorkers: 3, models: { m: [256, 2], other: [128, 1] } });

    await t.redis.zrem(t.keys.workers, "w1");
    await t.redis.del(t.keys.worker("w1"));
    assert.deepEqual(await read(), { liveWorkers: 2, models: { m: [1024, 1], other: [128, 1] } });

    // A stale heartbeat keeps its model listed, with no live worker.
    await beat("w3", "other", 128, Date.now() - STALE_MS - 1_000);
    assert.deepEqual(await read(), { liveWorkers: 1, models: { m: [1024, 1], other: [128, 0] } });

    // Same ids, one record gone (its TTL ran out): that worker is skipped.
    await t.redis.del(t.keys.worker("w2"));
    assert.deepEqual(await read(), { liveWorkers: 0, models: { other: [128, 0] } });
  } finally {
    await t.close();
  }
});
