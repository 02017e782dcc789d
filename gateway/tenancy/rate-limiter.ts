/**
 * The rate limiter: one Redis round trip to admit a request (requests, tokens
 * and concurrency in every scope, plus the usage counters), one to settle it.
 * Leases of running requests are refreshed in the background, all of them in
 * one pipelined round trip per interval, until the request ends or its
 * deadline passes; a gateway that dies simply stops refreshing and its leases
 * expire, so concurrency slots can never leak.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../../shared/redis-keys.ts";
import type { Usage } from "../../shared/protocol.ts";
import type { LimitScope, Policy } from "./policy.ts";
import { ADMIT, REFRESH_LEASE, SETTLE } from "./rate-limit-scripts.ts";
import { keyField, USAGE_FIELDS, usageExpiresAt, utcDay } from "./usage.ts";

/** One dimension of the x-ratelimit-* headers. */
export interface LimitState {
  limit: number;
  remaining: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

export interface LimitSnapshot {
  requests: LimitState;
  tokens: LimitState;
}

export type RejectReason = "requests" | "tokens" | "too_large" | "concurrency";

export type AdmitResult =
  | { admitted: true; admission: Admission; snapshot: LimitSnapshot }
  | { admitted: false; reason: RejectReason; retryAfterMs: number; snapshot: LimitSnapshot };

export interface RateLimiterOptions {
  /** A lease not refreshed for this long expires. */
  leaseTtlMs?: number;
  /** How often live leases are refreshed (well under the TTL). */
  refreshIntervalMs?: number;
  /** Leases are refreshed at most this long after admission (the request deadline). */
  maxRequestMs?: number;
}

/** A day's usage hash of a tenant and when it expires (unix s). */
interface UsageHash {
  key: string;
  expiresAt: number;
}

/** The scope's tenant id is every key's hash tag: one Cluster slot per script. */
function scopeKeys(keys: RedisKeys, s: LimitScope): [string, string, string] {
  return [
    keys.requestBucket(s.tenantId, s.keyId),
    keys.tokenBucket(s.tenantId, s.keyId),
    keys.leases(s.tenantId, s.keyId),
  ];
}

export class RateLimiter {
  readonly #leaseTtlMs: number;
  readonly #refreshIntervalMs: number;
  readonly #maxRequestMs: number;
  readonly #live = new Set<Admission>();
  #timer: number | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    options: RateLimiterOptions = {},
  ) {
    this.#leaseTtlMs = options.leaseTtlMs ?? 15_000;
    this.#refreshIntervalMs = options.refreshIntervalMs ?? Math.floor(this.#leaseTtlMs / 3);
    this.#maxRequestMs = options.maxRequestMs ?? 600_000;
  }

  /** Admits a request costing `tokens` (prompt + max_tokens), or says why not. */
  async admit(policy: Policy, keyId: string, tokens: number): Promise<AdmitResult> {
    const leaseId = crypto.randomUUID();
    const raw = await this.#run("admit", policy, keyId, tokens, leaseId);
    const snapshot = snapshotOf(raw);
    if (raw[0] !== 1) {
      return {
        admitted: false,
        reason: raw[1] as RejectReason,
        retryAfterMs: Number(raw[2]),
        snapshot,
      };
    }
    const admission = new Admission(
      this,
      policy,
      keyId,
      leaseId,
      tokens,
      Date.now() + this.#maxRequestMs,
      this.#usage(policy),
    );
    this.#live.add(admission);
    this.#ensureRefreshing();
    return { admitted: true, admission, snapshot };
  }

  /** Current state without charging anything: headers for requests that never reach admission. */
  async peek(policy: Policy, keyId: string): Promise<LimitSnapshot> {
    return snapshotOf(await this.#run("peek", policy, keyId, 0, ""));
  }

  /** Counts a request refused for good (in the key's usage, which the tenant's sums). */
  async recordRejection(policy: Policy, keyId: string): Promise<void> {
    const usage = this.#usage(policy);
    await this.redis.multi()
      .hincrby(usage.key, keyField(keyId, USAGE_FIELDS.rejectedRequests), 1)
      .expireat(usage.key, usage.expiresAt)
      .exec();
  }

  /** Stops refreshing; leases still held expire on their own. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** @internal Called once by `Admission.complete` or `Admission.withdraw`. */
  async settle(a: Admission, usage: Usage | null, withdrawn = false): Promise<void> {
    this.#live.delete(a);
    const used = usage === null ? 0 : usage.promptTokens + usage.completionTokens;
    // A withdrawal takes the request out of the day it was counted in.
    const day = withdrawn ? a.usage : this.#usage(a.policy);
    await SETTLE.run(this.redis, [
      ...a.policy.scopes.flatMap((s) => scopeKeys(this.keys, s)),
      day.key,
    ], [
      a.policy.scopes.length,
      a.reservedTokens - used,
      a.leaseId,
      keyField(a.keyId, ""),
      usage?.promptTokens ?? 0,
      usage?.completionTokens ?? 0,
      day.expiresAt,
      this.keys.slotReleased,
      a.policy.scopes[0].tenantId,
      withdrawn ? 1 : 0,
      ...a.policy.scopes.flatMap((
        s,
      ) => [s.requestsPerMinute ?? 0, s.tokensPerMinute ?? 0, s.concurrentRequests ?? 0]),
    ]);
  }

  async #run(
    mode: "admit" | "peek",
    policy: Policy,
    keyId: string,
    tokens: number,
    leaseId: string,
  ) {
    const keys = policy.scopes.flatMap((s) => scopeKeys(this.keys, s));
    const usage = this.#usage(policy);
    return await ADMIT.run(this.redis, [...keys, usage.key], [
      mode,
      policy.scopes.length,
      tokens,
      leaseId,
      this.#leaseTtlMs,
      keyField(keyId, ""),
      usage.expiresAt,
      ...policy.scopes.flatMap((
        s,
      ) => [s.requestsPerMinute ?? 0, s.tokensPerMinute ?? 0, s.concurrentRequests ?? 0]),
    ]) as (number | string)[];
  }

  /** Today's usage hash of the policy's tenant. */
  #usage(policy: Policy): UsageHash {
    const day = utcDay(Date.now());
    return { key: this.keys.usage(policy.scopes[0].tenantId, day), expiresAt: usageExpiresAt(day) };
  }

  #ensureRefreshing(): void {
    if (this.#timer !== undefined) return;
    // Deno's timers are numbers (the Node typings in node_modules claim otherwise).
    this.#timer = setInterval(() => this.#refresh(), this.#refreshIntervalMs) as unknown as number;
    // A refresher alone must not keep a process (or a test) alive.
    Deno.unrefTimer(this.#timer);
  }

  #refresh(): void {
    const now = Date.now();
    const pipeline = this.redis.pipeline();
    for (const a of this.#live) {
      if (now > a.deadline) {
        this.#live.delete(a); // abandoned: let its leases expire
        continue;
      }
      const leaseSets = a.policy.scopes.filter((s) => s.concurrentRequests !== null)
        .map((s) => this.keys.leases(s.tenantId, s.keyId));
      if (leaseSets.length > 0) {
        pipeline.evalsha(
          REFRESH_LEASE.sha,
          leaseSets.length,
          ...leaseSets,
          a.leaseId,
          this.#leaseTtlMs,
        );
      }
    }
    if (this.#live.size === 0) this.close();
    if (pipeline.length === 0) return;
    pipeline.exec().then(async (results) => {
      // After a Redis restart the script is gone: load it once, the next tick works.
      if (results?.some(([e]) => e?.message.startsWith("NOSCRIPT"))) {
        await this.redis.script("LOAD", REFRESH_LEASE.source);
      }
    }).catch(() => {/* Redis unreachable: the next tick tries again */});
  }
}

/** One admitted request; `complete` ends it exactly once. */
export class Admission {
  #completed: Promise<void> | undefined;

  constructor(
    private readonly limiter: RateLimiter,
    readonly policy: Policy,
    readonly keyId: string,
    readonly leaseId: string,
    /** Tokens reserved at admission: prompt + max_tokens. */
    readonly reservedTokens: number,
    /** After this instant the lease is no longer refreshed. */
    readonly deadline: number,
    /** The usage hash the admission counted the request in. */
    readonly usage: UsageHash,
  ) {}

  /**
   * Ends the request: gives back unused reserved tokens, releases the
   * concurrency slot and records `usage` — what the client was told, or what
   * it consumed before it went away; null when nothing was generated. Safe to
   * call more than once: only the first call counts.
   */
  complete(usage: Usage | null): Promise<void> {
    return this.#end(usage, false);
  }

  /**
   * Ends a request refused after its admission by a check that otherwise refuses before it (the
   * input filter's injection check, run once the job is queued): as if it had never been
   * admitted, its request and all its reserved tokens go back, its slot is released and nothing
   * stays in the usage. Only the first of `complete` and `withdraw` counts.
   */
  withdraw(): Promise<void> {
    return this.#end(null, true);
  }

  #end(usage: Usage | null, withdrawn: boolean): Promise<void> {
    this.#completed ??= this.limiter.settle(this, usage, withdrawn).catch((err: Error) => {
      // The lease still expires and the reservation refills with time: degraded, never leaked.
      console.error(`rate limiter: settling a request failed: ${err.message}`);
    });
    return this.#completed;
  }
}

function snapshotOf(raw: (number | string)[]): LimitSnapshot {
  const n = raw.map(Number);
  return {
    requests: { limit: n[3], remaining: n[4], resetMs: n[5] },
    tokens: { limit: n[6], remaining: n[7], resetMs: n[8] },
  };
}
