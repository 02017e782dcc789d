/**
 * Where tenants' safety policies live: one JSON value per tenant in Redis (`safetyPolicy` key),
 * written by the admin API, needed by every request.
 *
 * Compiled policies (word lists made automata) are cached per tenant, and a request reads Redis
 * only on a miss: that round trip was one of four before a job could be enqueued. A change is
 * published on `safetyInvalidation` in the same transaction as the write, and every gateway drops
 * that tenant's entry when the message arrives. While a gateway's subscription is down the cache
 * is not trusted and every request reads the stored JSON (reusing the compiled policy while the
 * JSON is unchanged), so a lost message can never keep an old policy in force.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../../shared/redis-keys.ts";
import type { Actor } from "../tenancy/audit.ts";
import { auditFields } from "../tenancy/audit.ts";
import { InvalidationFeed } from "../invalidation-feed.ts";
import {
  type CompiledPolicy,
  compilePolicy,
  DEFAULT_POLICY,
  type SafetyPolicy,
  SafetyPolicySchema,
} from "./policy.ts";

interface CacheEntry {
  /** The stored JSON (null: the default policy). */
  raw: string | null;
  compiled: CompiledPolicy;
  /** Read while every change was being heard: usable without asking Redis. */
  vouched: boolean;
}

/** Compiled policies kept; beyond this the least recently used is dropped. */
const CACHE_SIZE = 1000;

export class SafetyPolicyStore {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly defaultPolicy = compilePolicy(DEFAULT_POLICY);
  /** Bumped by every invalidation: a read that raced one does not vouch for its entry. */
  private generation = 0;
  private readonly feed = new InvalidationFeed({
    message: (tenantId) => this.forget(tenantId),
    reset: () => {
      this.generation++;
      this.cache.clear();
    },
  });

  constructor(private readonly redis: Redis, private readonly keys: RedisKeys) {}

  /** Listens for policy changes made through any gateway; until then every request reads Redis. */
  listen(subscriber: Redis): Promise<void> {
    return this.feed.listen(subscriber, this.keys.safetyInvalidation);
  }

  /** The tenant's stored policy, or null when it uses the default. */
  async read(tenantId: string): Promise<SafetyPolicy | null> {
    const raw = await this.redis.get(this.keys.safetyPolicy(tenantId));
    return raw === null ? null : SafetyPolicySchema.parse(JSON.parse(raw));
  }

  /** The policy to enforce for a tenant, compiled. */
  async get(tenantId: string): Promise<CompiledPolicy> {
    const cached = this.cache.get(tenantId);
    if (cached?.vouched && this.feed.trusted) {
      this.touch(tenantId, cached);
      return cached.compiled;
    }
    const generation = this.generation;
    const raw = await this.redis.get(this.keys.safetyPolicy(tenantId));
    const compiled = cached !== undefined && cached.raw === raw
      ? cached.compiled
      : raw === null
      ? this.defaultPolicy
      : compilePolicy(SafetyPolicySchema.parse(JSON.parse(raw)));
    // Vouched for only if no change can have been missed between the read and now.
    const vouched = this.feed.trusted && generation === this.generation;
    this.touch(tenantId, { raw, compiled, vouched });
    return compiled;
  }

  /** (Re)inserts an entry as the most recently used; past the bound the least recent goes. */
  private touch(tenantId: string, entry: CacheEntry): void {
    this.cache.delete(tenantId);
    this.cache.set(tenantId, entry);
    if (this.cache.size > CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
  }

  /** Replaces the tenant's policy (validated by the caller) and audits the change. */
  async write(actor: Actor, tenantId: string, policy: SafetyPolicy): Promise<void> {
    await this.redis.multi()
      .set(this.keys.safetyPolicy(tenantId), JSON.stringify(policy))
      .publish(this.keys.safetyInvalidation, tenantId)
      .xadd(
        this.keys.audit,
        "*",
        ...auditFields(actor, "safety_policy.update", tenantId, summary(policy)),
      )
      .exec();
    this.forget(tenantId);
  }

  /** Back to the default policy. */
  async remove(actor: Actor, tenantId: string): Promise<void> {
    await this.redis.multi()
      .del(this.keys.safetyPolicy(tenantId))
      .publish(this.keys.safetyInvalidation, tenantId)
      .xadd(this.keys.audit, "*", ...auditFields(actor, "safety_policy.reset", tenantId, null))
      .exec();
    this.forget(tenantId);
  }

  /**
   * Drops a tenant's entry, and keeps a read already under way from vouching for what it got.
   * Called for every change message, and at once by the gateway that made the change, so its
   * next request sees it without waiting for its own message.
   */
  private forget(tenantId: string): void {
    this.generation++;
    this.cache.delete(tenantId);
  }
}

/** What the audit log keeps of a policy: actions and list sizes, never the words themselves. */
function summary(policy: SafetyPolicy) {
  return {
    actions: policy.actions,
    banned_words: policy.banned_words.length,
    allowed_exceptions: policy.allowed_exceptions.length,
    output_action: policy.output_action,
  };
}
