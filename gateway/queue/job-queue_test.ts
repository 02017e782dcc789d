/**
 * Queue places on a real Redis: reservations and waiting jobs together never pass the limit,
 * and a request whose job is already enqueued (its reservation not yet given back) counts once.
 */
import assert from "node:assert/strict";
import type { Job } from "../../shared/protocol.ts";
import { testRedis } from "../tenancy/test_support.ts";
import { sampling } from "../../worker/test-support/fixtures.ts";
import { JobQueue } from "./job-queue.ts";

function job(requestId: string): Job {
  return {
    requestId,
    gatewayId: "gw-test",
    tenantId: "acme",
    model: "test-model",
    kind: "completion",
    promptTokenIds: [1, 2, 3],
    sampling: sampling({ maxTokens: 4 }),
    stop: [],
    deadline: Date.now() + 60_000,
    enqueuedAt: Date.now(),
  };
}

Deno.test("places up to the limit are reserved, the next is refused with the count", async () => {
  const t = testRedis("queue-places");
  const queue = new JobQueue(t.redis, t.keys);
  try {
    for (const id of ["a", "b", "c"]) {
      assert.deepEqual(await queue.reserve(id, 3), { reserved: true });
    }
    assert.deepEqual(await queue.reserve("d", 3), { reserved: false, waiting: 3 });
    await queue.release("b");
    assert.deepEqual(await queue.reserve("d", 3), { reserved: true });
  } finally {
    await queue.close();
    await t.close();
  }
});

Deno.test("an enqueued job whose reservation is not yet given back counts once, at the limit too", async () => {
  const t = testRedis("queue-places-enqueued");
  const queue = new JobQueue(t.redis, t.keys);
  try {
    assert.deepEqual(await queue.reserve("a", 2), { reserved: true });
    await queue.enqueue(job("a")); // waiting, and still reserved until `release`
    assert.deepEqual(await queue.reserve("b", 2), { reserved: true }, "a counts once: 1 of 2");
    assert.deepEqual(await queue.reserve("c", 2), { reserved: false, waiting: 2 });
    await queue.enqueue(job("b"));
    await queue.release("a");
    await queue.release("b");
    assert.deepEqual(await queue.reserve("c", 2), { reserved: false, waiting: 2 }, "two jobs wait");
    assert.deepEqual(await queue.reserve("c", 3), { reserved: true });
  } finally {
    await queue.close();
    await t.close();
  }
});

Deno.test("an expired reservation (its gateway died) stops counting once the limit is reached", async () => {
  const t = testRedis("queue-places-expired");
  const queue = new JobQueue(t.redis, t.keys);
  try {
    // A dead gateway's place: it expired a second ago and was never given back.
    await t.redis.zadd(t.keys.queueReservations, Date.now() - 1_000, "dead");
    assert.deepEqual(await queue.reserve("a", 2), { reserved: true }, "below the limit");
    assert.deepEqual(
      await queue.reserve("b", 2),
      { reserved: true },
      "the expired place is not counted",
    );
    assert.deepEqual(await queue.reserve("c", 2), { reserved: false, waiting: 2 });
    assert.equal(
      await t.redis.zscore(t.keys.queueReservations, "dead"),
      null,
      "purged at the limit",
    );
  } finally {
    await queue.close();
    await t.close();
  }
});
