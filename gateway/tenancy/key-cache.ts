/**
 * In-process cache of resolved API keys, so authentication costs no Redis round
 * trip on the hot path. Every change to a tenant or key is published on the
 * invalidation channel (store.ts); each gateway drops the affected entries the
 * moment the message arrives. While the subscription is down the cache is not
 * trusted and every lookup goes to Redis, so a missed message can never keep a
 * revoked key alive; the TTL is only a last line of defence.
 */
import type { Redis } from "ioredis";
import { hashApiKey } from "./api-key.ts";
import { InvalidationFeed } from "../invalidation-feed.ts";
import type { Invalidation, KeyLookup, TenantStore } from "./store.ts";

export interface KeyCacheOptions {
  /** How long a found key is kept without any invalidation. */
  ttlMs?: number;
  /** How long "no such key" is kept: bounds Redis load from a client retrying a bad key. */
  negativeTtlMs?: number;
  /** Most cached entries; the oldest go first. */
  maxEntries?: number;
}

interface Entry {
  lookup: KeyLookup | null;
  expiresAt: number;
}

export class KeyCache {
  readonly #entries = new Map<string, Entry>();
  readonly #ttlMs: number;
  readonly #negativeTtlMs: number;
  readonly #maxEntries: number;
  /** Bumped by every invalidation: a lookup that raced one is not cached. */
  #generation = 0;
  readonly #feed = new InvalidationFeed({
    message: (message) => this.#invalidate(message),
    reset: () => this.clear(),
  });

  constructor(private readonly store: TenantStore, options: KeyCacheOptions = {}) {
    this.#ttlMs = options.ttlMs ?? 60_000;
    this.#negativeTtlMs = options.negativeTtlMs ?? 2_000;
    this.#maxEntries = options.maxEntries ?? 50_000;
  }

  /**
   * Subscribes `subscriber` (a connection in subscriber mode, which may be
   * shared with other channels) to the invalidation channel.
   */
  listen(subscriber: Redis, channel: string): Promise<void> {
    return this.#feed.listen(subscriber, channel);
  }

  /** The key's record and tenant, or null for an unknown key. Revocation and expiry are the caller's to check. */
  async resolve(apiKey: string): Promise<KeyLookup | null> {
    const hash = hashApiKey(apiKey);
    const now = Date.now();
    const hit = this.#entries.get(hash);
    if (hit !== undefined && hit.expiresAt > now && this.#feed.trusted) return hit.lookup;

    const generation = this.#generation;
    const lookup = await this.store.lookup(hash);
    if (this.#feed.trusted && generation === this.#generation) {
      if (this.#entries.size >= this.#maxEntries) {
        this.#entries.delete(this.#entries.keys().next().value!);
      }
      this.#entries.delete(hash); // re-insert at the end: Map order is age order
      this.#entries.set(hash, {
        lookup,
        expiresAt: now + (lookup === null ? this.#negativeTtlMs : this.#ttlMs),
      });
    }
    return lookup;
  }

  clear(): void {
    this.#generation++;
    this.#entries.clear();
  }

  #invalidate(message: string): void {
    this.#generation++;
    let change: Invalidation;
    try {
      change = JSON.parse(message);
    } catch {
      this.clear();
      return;
    }
    if (change.keyHash !== undefined) this.#entries.delete(change.keyHash);
    for (const [hash, entry] of this.#entries) {
      if (entry.lookup?.tenant.id === change.tenantId) this.#entries.delete(hash);
    }
  }
}
