import assert from "node:assert/strict";
import { testRedis } from "../tenancy/test_support.ts";
import { readAudit } from "../tenancy/audit.ts";
import { DEFAULT_POLICY, SafetyPolicySchema } from "./policy.ts";
import { SafetyPolicyStore } from "./policy_store.ts";

const actor = { who: "admin:test", via: "local" };

Deno.test("policy store: default until written, compiled once per stored version, audited", async () => {
  const t = testRedis("safety-policy");
  try {
    const store = new SafetyPolicyStore(t.redis, t.keys);
    assert.equal(await store.read("acme"), null);
    const initial = await store.get("acme");
    assert.deepEqual(initial.policy, DEFAULT_POLICY);

    const policy = SafetyPolicySchema.parse({
      banned_words: ["project falcon"],
      actions: { pii: "flag" },
    });
    await store.write(actor, "acme", policy);
    assert.deepEqual(await store.read("acme"), policy);
    const compiled = await store.get("acme");
    assert.equal(compiled.policy.actions.pii, "flag");
    assert.equal(compiled.bannedWords.size, 1);
    assert.equal(await store.get("acme"), compiled, "unchanged JSON reuses the compiled policy");

    // Another gateway's store sees the change on its next request, with no message needed.
    const other = new SafetyPolicyStore(t.redis, t.keys);
    assert.equal((await other.get("acme")).policy.actions.pii, "flag");

    await store.remove(actor, "acme");
    assert.deepEqual((await store.get("acme")).policy, DEFAULT_POLICY);

    const audit = await readAudit(t.redis, t.keys.audit, 10);
    assert.deepEqual(audit.map((e) => e.action), ["safety_policy.reset", "safety_policy.update"]);
    assert.ok(
      !JSON.stringify(audit).includes("falcon"),
      "the audit log keeps list sizes, not words",
    );
  } finally {
    await t.close();
  }
});

Deno.test("policy store: a listening gateway serves its cache and hears every change", async () => {
  const t = testRedis("safety-policy-cache");
  const subscribers = [t.redis.duplicate(), t.redis.duplicate()];
  try {
    const [admin, gateway] = subscribers.map(() => new SafetyPolicyStore(t.redis, t.keys));
    await admin.listen(subscribers[0]);
    await gateway.listen(subscribers[1]);
    assert.deepEqual((await gateway.get("acme")).policy, DEFAULT_POLICY);

    // Written behind the store's back (no message): the cached policy stays in force, which
    // shows requests are served without a read.
    const flagged = SafetyPolicySchema.parse({ actions: { pii: "flag" } });
    await t.redis.set(t.keys.safetyPolicy("acme"), JSON.stringify(flagged));
    assert.deepEqual((await gateway.get("acme")).policy, DEFAULT_POLICY);

    // Written through a store: the change message reaches the other gateway's cache.
    const blocked = SafetyPolicySchema.parse({ actions: { pii: "block" } });
    await admin.write(actor, "acme", blocked);
    const deadline = Date.now() + 2_000;
    while ((await gateway.get("acme")).policy.actions.pii !== "block" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal((await gateway.get("acme")).policy.actions.pii, "block");
    await admin.remove(actor, "acme");
    while ((await gateway.get("acme")).policy.actions.pii !== "redact" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.deepEqual((await gateway.get("acme")).policy, DEFAULT_POLICY);

    // Subscription lost: changes may be missed, so every request reads Redis again.
    subscribers[1].disconnect();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await t.redis.set(t.keys.safetyPolicy("acme"), JSON.stringify(flagged));
    assert.equal((await gateway.get("acme")).policy.actions.pii, "flag");
  } finally {
    for (const s of subscribers) s.disconnect();
    await t.close();
  }
});

Deno.test("policy schema: defaults fill gaps, bad values are refused", () => {
  const parsed = SafetyPolicySchema.parse({ actions: { secrets: "block" } });
  assert.equal(parsed.actions.secrets, "block");
  assert.equal(parsed.actions.pii, "redact");
  assert.equal(parsed.output_action, "redact");
  assert.ok(!SafetyPolicySchema.safeParse({ actions: { pii: "delete" } }).success);
  assert.ok(!SafetyPolicySchema.safeParse({ actions: { weather: "block" } }).success);
  assert.ok(!SafetyPolicySchema.safeParse({ banned_words: [""] }).success);
  assert.ok(!SafetyPolicySchema.safeParse({ colour: "red" }).success);
});
