/**
 * 500 streaming clients disconnecting at once, while the engine runs as many
 * of them as it has slots and the rest wait in the queue. Every one of them
 * must be let go everywhere: engine sequences cancelled, waiting jobs removed,
 * the gateway's channel subscriptions dropped, concurrency leases released.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { bootstrapTenant } from "../../gateway/tenancy/bootstrap.ts";
import { gatewayEventListeners, type Stack, startStack } from "../helpers/stack.ts";
import { type OpenStream, openStream } from "../helpers/sse-client.ts";
import { eventually } from "../helpers/eventually.ts";

const CLIENTS = 500;
const ENGINE_SLOTS = 16;

describe("a storm of disconnecting clients", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ workerEnv: { ENGINE_MAX_NUM_SEQS: String(ENGINE_SLOTS) } });
  });
  after(async () => await s?.stop());

  test(`${CLIENTS} clients gone at once: every engine slot, queue entry, subscription and lease is freed`, async () => {
    const { apiKey, tenant } = await bootstrapTenant(s.redis, s.prefix, {
      tenantId: "storm",
      settings: { concurrentRequests: CLIENTS, requestsPerMinute: 10 * CLIENTS },
    });
    const streams: OpenStream[] = await Promise.all(
      Array.from(
        { length: CLIENTS },
        (_, i) =>
          openStream({
            url: s.url,
            apiKey,
            body: { max_tokens: 2000, prompt: `Story number ${i}:` },
          }),
      ),
    );
    assert.deepEqual(
      [...new Set(streams.map((st) => st.status))],
      [200],
      "every request was admitted",
    );
    assert.equal(await s.redis.zcard(s.keys.leases(tenant.id)), CLIENTS);
    await eventually(
      "the engine runs a full batch",
      10_000,
      async () => (await s.heartbeats())[0]?.running === ENGINE_SLOTS,
    );

    const abortedAt = Date.now();
    for (const stream of streams) stream.abort();
    await Promise.all(streams.map((st) => st.ended));

    const queue = `${s.keys.bullPrefix}:${s.keys.queueName}`;
    await eventually("the engine is idle", 10_000, async () => {
      const [beat] = await s.heartbeats();
      return beat.running === 0 && beat.waiting === 0;
    });
    await eventually(
      "no job waits or runs",
      10_000,
      async () =>
        (await s.redis.llen(`${queue}:wait`)) + (await s.redis.llen(`${queue}:active`)) +
            (await s.redis.zcard(`${queue}:prioritized`)) === 0,
    );
    await eventually(
      "the gateway stopped listening for every request",
      10_000,
      async () => (await gatewayEventListeners(s)) === 0,
    );
    await eventually(
      "every concurrency lease is released",
      10_000,
      async () => (await s.redis.zcard(s.keys.leases(tenant.id))) === 0,
    );
    await eventually(
      "no stream log is left",
      10_000,
      async () => (await s.redis.keys(`${s.prefix}:stream:*`)).length === 0,
    );
    console.log(`# ${CLIENTS} clients released everywhere within ${Date.now() - abortedAt} ms`);

    // And the stack is not worse for it.
    const next = await (await openStream({ url: s.url, apiKey, body: { max_tokens: 5 } })).ended;
    assert.ok(next.done, JSON.stringify(next));
  });
});
