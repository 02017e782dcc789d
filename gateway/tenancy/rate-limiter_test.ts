import assert from "node:assert/strict";
import type { Policy } from "./policy.ts";
import { RateLimiter } from "./rate-limiter.ts";
import { SlotWaiters } from "./slot-waiters.ts";
import { testRedis } from "./test_support.ts";
import { readUsage, USAGE_RETENTION_SECONDS, usageExpiresAt, utcDay } from "./usage.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function policy(
  tenant: { rpm?: number; tpm?: number; conc?: number },
  key?: { id: string; rpm?: number; tpm?: number; conc?: number },
): Policy {
  const scopes = [{
    tenantId: "acme",
    requestsPerMinute: tenant.rpm ?? 1000,
    tokensPerMinute: tenant.tpm ?? 1_000_000,
    concurrentRequests: tenant.conc ?? 100,
  }];
  if (key !== undefined) {
    scopes.push(
      {
        tenantId: "acme",
        keyId: key.id,
        requestsPerMinute: key.rpm ?? null,
        tokensPerMinute: key.tpm ?? null,
        concurrentRequests: key.conc ?? null,
      } as (typeof scopes)[0],
    );
  }
  return { allowedModels: null, maxTokens: null, maxSchemaBytes: 16_384, priority: "standard", scopes };
}

/** Two limiters on separate connections: two gateway processes as far as Redis can tell. */
async function withLimiters(
  fn: (a: RateLimiter, b: RateLimiter, t: ReturnType<typeof testRedis>) => Promise<void>,
  options = {},
) {
  const t = testRedis("limiter");
  const a = new RateLimiter(t.connect(), t.keys, options);
  const b = new RateLimiter(t.connect(), t.keys, options);
  try {
    await fn(a, b, t);
  } finally {
    a.close();
    b.close();
    await t.close();
  }
}

Deno.test("requests per minute hold exactly across two limiters admitting concurrently", () =>
  withLimiters(async (a, b) => {
    const p = policy({ rpm: 10 });
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).admit(p, "key_a", 1)),
    );
    const admitted = results.filter((r) => r.admitted);
    assert.equal(admitted.length, 10);
    const rejected = results.find((r) => !r.admitted)!;
    assert.ok(!rejected.admitted && rejected.reason === "requests");
    // One request refills in 6 s; the last admitted left the bucket near 0.
    assert.ok(
      rejected.retryAfterMs > 5_000 && rejected.retryAfterMs <= 6_000,
      String(rejected.retryAfterMs),
    );
    assert.deepEqual(
      { limit: rejected.snapshot.requests.limit, remaining: rejected.snapshot.requests.remaining },
      { limit: 10, remaining: 0 },
    );
    for (const r of admitted) if (r.admitted) await r.admission.complete(null);
  }));

Deno.test("the bucket refills: a rejected request succeeds after retry-after", () =>
  withLimiters(async (a) => {
    const p = policy({ rpm: 600 }); // one request per 100 ms
    let rejected;
    for (let i = 0; i < 2000; i++) { // 600 plus what refills meanwhile
      const r = await a.admit(p, "key_a", 1);
      if (!r.admitted) {
        rejected = r;
        break;
      }
      await r.admission.complete(null);
    }
    assert.ok(rejected !== undefined && !rejected.admitted);
    assert.ok(rejected.retryAfterMs <= 100);
    await sleep(rejected.retryAfterMs + 5);
    assert.equal((await a.admit(p, "key_a", 1)).admitted, true);
  }));

Deno.test("tokens: prompt + max_tokens reserved at admission, the unused part returned at the end", () =>
  withLimiters(async (a, b) => {
    const p = policy({ tpm: 6000 }); // 100 tokens per second refill
    const first = await a.admit(p, "key_a", 4000);
    assert.ok(first.admitted);
    assert.ok(first.snapshot.tokens.remaining >= 2000 && first.snapshot.tokens.remaining <= 2010);
    const second = await b.admit(p, "key_a", 4000);
    assert.ok(!second.admitted && second.reason === "tokens");
    // 2000 tokens missing at 100/s: about 20 s.
    assert.ok(
      second.retryAfterMs > 19_000 && second.retryAfterMs <= 20_000,
      String(second.retryAfterMs),
    );

    await first.admission.complete({ promptTokens: 300, completionTokens: 200 }); // 3500 unused
    const third = await b.admit(p, "key_a", 4000);
    assert.ok(third.admitted, "the refund makes room");
    assert.ok(third.snapshot.tokens.remaining >= 1500 && third.snapshot.tokens.remaining < 1600);
    await third.admission.complete(null);
  }));

Deno.test("a request larger than the whole per-minute budget is refused as too large", () =>
  withLimiters(async (a) => {
    const r = await a.admit(policy({ tpm: 1000 }), "key_a", 1001);
    assert.ok(!r.admitted && r.reason === "too_large");
  }));

Deno.test("concurrency: slots are taken across limiters and given back on completion", () =>
  withLimiters(async (a, b) => {
    const p = policy({ conc: 3 });
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).admit(p, "key_a", 1)),
    );
    const held = results.flatMap((r) => (r.admitted ? [r.admission] : []));
    assert.equal(held.length, 3);
    const refused = results.find((r) => !r.admitted)!;
    assert.ok(
      !refused.admitted && refused.reason === "concurrency" && refused.retryAfterMs === 1000,
    );

    await held[0].complete(null);
    await held[0].complete(null); // twice: still one slot
    const again = await b.admit(p, "key_a", 1);
    assert.ok(again.admitted);
    assert.equal((await a.admit(p, "key_a", 1)).admitted, false);
    for (const h of [...held, again.admission]) await h.complete(null);
  }));

Deno.test("concurrency: live leases are refreshed; a dead process's leases expire", () =>
  withLimiters(async (alive, dying) => {
    const p = policy({ conc: 2 });
    const kept = await alive.admit(p, "key_a", 1);
    const orphan = await dying.admit(p, "key_a", 1);
    assert.ok(kept.admitted && orphan.admitted);
    dying.close(); // the process dies: no more refreshes, no completion
    await sleep(700); // > 2 TTLs
    const next = await alive.admit(p, "key_a", 1);
    assert.ok(next.admitted, "the orphaned slot came back");
    assert.equal(
      (await alive.admit(p, "key_a", 1)).admitted,
      false,
      "the refreshed lease still holds its slot",
    );
    await kept.admission.complete(null);
    await next.admission.complete(null);
  }, { leaseTtlMs: 300, refreshIntervalMs: 80 }));

Deno.test("a key's own limit binds before its tenant's and is reported in the headers", () =>
  withLimiters(async (a) => {
    const limited = policy({ rpm: 100 }, { id: "key_small", rpm: 2 });
    const other = policy({ rpm: 100 });
    const r1 = await a.admit(limited, "key_small", 1);
    assert.ok(r1.admitted);
    assert.deepEqual({
      limit: r1.snapshot.requests.limit,
      remaining: r1.snapshot.requests.remaining,
    }, {
      limit: 2,
      remaining: 1,
    });
    assert.ok((await a.admit(limited, "key_small", 1)).admitted);
    const r3 = await a.admit(limited, "key_small", 1);
    assert.ok(!r3.admitted && r3.reason === "requests");
    const fromOtherKey = await a.admit(other, "key_big", 1);
    assert.ok(fromOtherKey.admitted, "the tenant still has room");
    assert.equal(
      fromOtherKey.snapshot.requests.remaining,
      97,
      "charged for the admitted requests only",
    );
  }));

Deno.test("peek reports the state without charging it", () =>
  withLimiters(async (a) => {
    const p = policy({ rpm: 10, tpm: 600 });
    const before = await a.peek(p, "key_a");
    assert.deepEqual(before, {
      requests: { limit: 10, remaining: 10, resetMs: 0 },
      tokens: { limit: 600, remaining: 600, resetMs: 0 },
    });
    const r = await a.admit(p, "key_a", 60);
    assert.ok(r.admitted);
    const after = await a.peek(p, "key_a");
    assert.equal(after.requests.remaining, 9);
    assert.ok(after.tokens.remaining >= 540 && after.tokens.remaining < 545);
    assert.ok(
      after.tokens.resetMs > 5_900 && after.tokens.resetMs <= 6_000,
      String(after.tokens.resetMs),
    );
    assert.deepEqual(await a.peek(p, "key_a").then((s) => s.requests.remaining), 9);
  }));

Deno.test("usage: admitted and rejected requests and settled tokens, per tenant and per key", () =>
  withLimiters(async (a, b, t) => {
    const p = policy({ rpm: 3 });
    const r1 = await a.admit(p, "key_1", 50);
    const r2 = await b.admit(p, "key_2", 50);
    const r3 = await b.admit(p, "key_2", 50);
    assert.equal((await a.admit(p, "key_1", 50)).admitted, false);
    await a.recordRejection(p, "key_1"); // the caller gives up on it
    assert.ok(r1.admitted && r2.admitted && r3.admitted);
    await r1.admission.complete({ promptTokens: 10, completionTokens: 5 });
    await r2.admission.complete({ promptTokens: 20, completionTokens: 7 });
    await r3.admission.complete(null);
    const today = utcDay(Date.now());
    const report = await readUsage(t.redis, t.keys, "acme", today, today);
    assert.deepEqual(report.total, {
      requests: 3,
      rejectedRequests: 1,
      promptTokens: 30,
      completionTokens: 12,
    });
    assert.deepEqual(report.days[0].keys, {
      key_1: { requests: 1, rejectedRequests: 1, promptTokens: 10, completionTokens: 5 },
      key_2: { requests: 2, rejectedRequests: 0, promptTokens: 20, completionTokens: 7 },
    });
  }));

Deno.test("usage: the day's hash expires at the day's end plus the retention, whoever starts it", () =>
  withLimiters(async (a, _b, t) => {
    const p = policy({});
    const today = utcDay(Date.now());
    const usage = t.keys.usage("acme", today);
    const expiresAt = async () => Number(await t.redis.call("EXPIRETIME", usage));
    // Started by a settlement (a request admitted yesterday that ends today).
    const admitted = await a.admit(p, "key_1", 10);
    assert.ok(admitted.admitted);
    await t.redis.del(usage);
    await admitted.admission.complete({ promptTokens: 3, completionTokens: 2 });
    assert.equal(await expiresAt(), usageExpiresAt(today));
    // Started by an admission.
    await t.redis.del(usage);
    const again = await a.admit(p, "key_1", 10);
    assert.ok(again.admitted);
    assert.equal(await expiresAt(), usageExpiresAt(today));
    await again.admission.complete(null);
    // Started by a rejection.
    await t.redis.del(usage);
    await a.recordRejection(p, "key_1");
    assert.equal(await expiresAt(), usageExpiresAt(today));
    const endOfJan1 = Date.parse("2026-01-02T00:00:00Z") / 1000;
    assert.equal(usageExpiresAt("2026-01-01"), endOfJan1 + USAGE_RETENTION_SECONDS);
  }));

Deno.test("a released slot is announced; a waiter of that tenant wakes, others keep waiting", () =>
  withLimiters(async (a, _b, t) => {
    const slots = new SlotWaiters();
    await slots.listen(t.connect(), t.keys.slotReleased);
    const held = await a.admit(policy({ conc: 1 }), "key_a", 1);
    assert.ok(held.admitted);
    const woken: string[] = [];
    const acme = slots.wait("acme", 5_000).then(() => woken.push("acme"));
    const other = slots.wait("other", 300).then(() => woken.push("other"));
    assert.equal(slots.waiting, 2);
    await held.admission.complete(null);
    await acme;
    assert.deepEqual(woken, ["acme"]);
    await other; // times out on its own
    assert.equal(slots.waiting, 0);
  }));

Deno.test("a withdrawn request is as if never admitted: request, tokens and slot back, no usage", () =>
  withLimiters(async (a, _b, t) => {
    const p = policy({ rpm: 10, tpm: 1_000, conc: 1 }, { id: "key_a", rpm: 5 });
    const before = await a.peek(p, "key_a");
    const admitted = await a.admit(p, "key_a", 300);
    assert.ok(admitted.admitted);
    assert.equal(admitted.snapshot.requests.remaining, 4);
    assert.equal(admitted.snapshot.tokens.remaining, 700);
    // Only one concurrent request: the slot is held.
    assert.equal((await a.admit(p, "key_a", 1)).admitted, false);

    await admitted.admission.withdraw();
    await admitted.admission.complete({ promptTokens: 100, completionTokens: 0 }); // no effect: ended
    const after = await a.peek(p, "key_a");
    assert.deepEqual(
      { requests: after.requests.remaining, tokens: after.tokens.remaining },
      { requests: before.requests.remaining, tokens: before.tokens.remaining },
    );
    const usage = await readUsage(t.redis, t.keys, "acme", utcDay(Date.now()), utcDay(Date.now()));
    const nothing = { requests: 0, rejectedRequests: 0, promptTokens: 0, completionTokens: 0 };
    assert.deepEqual(usage.total, nothing);
    for (const day of usage.days) {
      for (const counts of Object.values(day.keys)) assert.deepEqual(counts, nothing);
    }
    // The slot is free again.
    const next = await a.admit(p, "key_a", 1);
    assert.ok(next.admitted);
    await next.admission.complete(null);
  }));
