/**
 * A worker killed with SIGKILL mid-generation. With another worker up, the
 * job's lock runs out, the stalled-job check hands it over, and the new worker
 * resumes the stream: the client gets the same complete answer an undisturbed
 * run gives (greedy sampling), with no duplicated or missing text. With no
 * worker left, the client gets a clear error event within the idle bound and
 * the job is picked up (and settled) by the next worker that starts.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { bootstrapTenant } from "../../gateway/tenancy/bootstrap.ts";
import { type Stack, startStack } from "../helpers/stack.ts";
import { openStream, tokenCounts } from "../helpers/sse-client.ts";
import { eventually } from "../helpers/eventually.ts";

const LOCK_MS = 1000;
const IDLE_MS = 6000;

describe("a worker killed mid-generation", () => {
  let s: Stack;
  let apiKey: string;
  const leases = () => s.redis.zcard(s.keys.leases("crash"));
  before(async () => {
    s = await startStack({
      workers: 2,
      workerEnv: { JOB_LOCK_MS: String(LOCK_MS) },
      gatewayEnv: { STREAM_IDLE_TIMEOUT_MS: String(IDLE_MS) },
    });
    ({ apiKey } = await bootstrapTenant(s.redis, s.prefix, {
      tenantId: "crash",
      settings: { concurrentRequests: 4 },
    }));
  });
  after(async () => await s?.stop());

  test("the other worker resumes the stream: same answer as an undisturbed run, nothing lost or repeated", async () => {
    const body = { max_tokens: 400, temperature: 0, prompt: "The history of the city begins" };
    const reference = await (await openStream({ url: s.url, apiKey, body })).ended;
    assert.ok(
      reference.done && reference.text.length > 200,
      `reference run: ${JSON.stringify(reference).slice(0, 300)}`,
    );

    const stream = await openStream({ url: s.url, apiKey, body });
    await stream.textAtLeast(Math.floor(reference.text.length / 4));
    const victim = await s.busyWorker();
    const killedAt = Date.now();
    await victim.stop("SIGKILL");
    const before = stream.text.length;
    const end = await stream.ended;

    assert.ok(before < reference.text.length, "the worker died before the answer was complete");
    assert.equal(end.error, undefined, `no error event: ${JSON.stringify(end.error)}`);
    assert.ok(end.done, "the stream ends with [DONE]");
    assert.equal(
      end.text,
      reference.text,
      "the resumed text continues exactly where the stream stood",
    );
    assert.equal(end.finishReason, reference.finishReason);
    assert.deepEqual(tokenCounts(end.usage), tokenCounts(reference.usage), "usage counts every completion token once");
    assert.ok(Date.now() - killedAt < 2 * LOCK_MS + IDLE_MS);

    // Nothing is held: the survivor's engine is idle, the job completed, its stream log is gone.
    await eventually(
      "the surviving worker's engine is idle, the job done, its stream log deleted",
      3_000,
      async () =>
        (await s.heartbeats()).every((h) =>
          h.workerId === victim.name || (h.running === 0 && h.waiting === 0)
        ) &&
        (await s.redis.llen(`${s.keys.bullPrefix}:${s.keys.queueName}:active`)) === 0 &&
        (await s.redis.keys(`${s.prefix}:stream:*`)).length === 0,
    );
    await eventually("the concurrency slot came back", 2_000, async () => (await leases()) === 0);
  });

  test("with no worker left: a clear error event within the idle bound, the job cancelled, nothing held", async () => {
    const survivors = (await s.heartbeats()).map((h) => h.workerId);
    assert.equal(survivors.length, 1);
    const stream = await openStream({
      url: s.url,
      apiKey,
      body: { max_tokens: 2000, temperature: 0 },
    });
    await stream.textAtLeast(20);
    const killedAt = Date.now();
    await s.workerById(survivors[0]).stop("SIGKILL");
    const end = await stream.ended;
    const waited = Date.now() - killedAt;

    assert.ok(!end.done, "no [DONE]: the answer is incomplete");
    assert.equal(end.error?.code, "timeout", JSON.stringify(end));
    assert.match(end.error!.message, /no other worker resumed it/);
    assert.ok(
      waited >= IDLE_MS - 500 && waited < IDLE_MS + 2_000,
      `ended ${waited} ms after the kill`,
    );

    // The gateway cancels the job it gave up on: nothing stays active, no stream log is left.
    await eventually(
      "the abandoned job is removed with its stream log",
      2_000,
      async () =>
        (await s.redis.llen(`${s.keys.bullPrefix}:${s.keys.queueName}:active`)) === 0 &&
        (await s.redis.keys(`${s.prefix}:stream:*`)).length === 0,
    );
    await eventually("the concurrency slot came back", 2_000, async () => (await leases()) === 0);

    // A new worker serves at once, and has nothing stale to run.
    await s.addWorker();
    const next = await (await openStream({ url: s.url, apiKey, body: { max_tokens: 5 } })).ended;
    assert.ok(next.done, JSON.stringify(next));
    const [fresh] = (await s.heartbeats()).filter((h) => !survivors.includes(h.workerId));
    assert.equal(fresh.running, 0);
  });
});
