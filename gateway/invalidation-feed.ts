/**
 * What keeps an in-process cache honest across gateways: every change is published on a channel,
 * and each gateway drops what the message names the moment it arrives. Messages sent while the
 * subscription is down (a reconnect) are lost, so from the connection's close until the
 * resubscription is confirmed the cache must not be trusted: `trusted` is false, the owner reads
 * through to Redis, and the cache is emptied on both edges.
 *
 * Used by the API key cache (tenancy/key-cache.ts) and the safety policy cache
 * (safety/policy_store.ts).
 */
import type { Redis } from "ioredis";

export interface InvalidationHandlers {
  /** A change was announced (the message says which). */
  message(message: string): void;
  /** Anything cached may be stale: forget it all. */
  reset(): void;
}

export class InvalidationFeed {
  #trusted = false;

  constructor(private readonly handlers: InvalidationHandlers) {}

  /** Whether every change since the cache was filled has been heard. */
  get trusted(): boolean {
    return this.#trusted;
  }

  /**
   * Subscribes `subscriber` (a connection in subscriber mode, which may be shared with other
   * channels) to `channel`.
   */
  async listen(subscriber: Redis, channel: string): Promise<void> {
    subscriber.on("message", (from: string, message: string) => {
      if (from === channel) this.handlers.message(message);
    });
    // ioredis resubscribes after a reconnect; messages sent meanwhile are lost.
    subscriber.on("close", () => {
      this.#trusted = false;
      this.handlers.reset();
    });
    await subscriber.subscribe(channel);
    this.#trusted = true;
    // Only now: a fresh duplicate() connects while the first SUBSCRIBE waits in its queue, and a
    // handler registered before would answer that first "ready" with a second SUBSCRIBE whose
    // reset emptied the cache the first lookups had just filled (seen as a flaky policy-store test).
    subscriber.on("ready", () => {
      subscriber.subscribe(channel).then(() => {
        this.handlers.reset();
        this.#trusted = true;
      }, () => {/* stays untrusted: every lookup goes to Redis */});
    });
  }
}
