/**
 * One Redis subscriber connection per gateway process, routing every request's events to the
 * request. The process has an id, every request's event channel names it (the job carries it to
 * the worker), and the process listens with one pattern subscription on its own channels,
 * confirmed once at its start: a request starts listening without a command or a round trip of
 * its own, and stops the same way.
 *
 * A pattern on the process's own channels, not one on every gateway's (`gen:*`): with several
 * gateways on one Redis, that would deliver every token of every request to every gateway.
 *
 * No event may be published before someone listens, so a request waits for the pattern to be
 * confirmed on the current connection; between a reconnect and the confirmation it waits (and
 * fails like a command on a connection that is down when the next connection attempt fails).
 * Events published while the connection was down are lost, as with any subscription: the
 * request's stream sees the gap in `seq` (or the silence) and fails, never truncates quietly.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../../shared/redis-keys.ts";

export type MessageListener = (message: string) => void;

export class EventHub {
  readonly gatewayId: string;
  readonly #subscriber: Redis;
  readonly #keys: RedisKeys;
  readonly #pattern: string;
  readonly #listeners = new Map<string, MessageListener>();
  #listening = false;
  /** Requests waiting for the pattern's confirmation after a reconnect. */
  #waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  /** `subscriber` is a dedicated connection: it is put in subscriber mode. */
  constructor(subscriber: Redis, keys: RedisKeys, gatewayId: string = crypto.randomUUID()) {
    this.gatewayId = gatewayId;
    this.#subscriber = subscriber;
    this.#keys = keys;
    this.#pattern = keys.eventChannelPattern(gatewayId);
    subscriber.on("pmessage", (pattern: string, channel: string, message: string) => {
      if (pattern === this.#pattern) this.#listeners.get(channel)?.(message);
    });
  }

  /** Subscribes to this process's channels; resolves once Redis confirms. Once, before serving. */
  async listen(): Promise<void> {
    await this.#subscriber.psubscribe(this.#pattern);
    this.#confirmed();
    this.#subscriber.on("close", () => {
      this.#listening = false;
      const waiters = this.#waiters;
      this.#waiters = [];
      const err = new Error("the event subscriber connection is down");
      for (const waiter of waiters) waiter.reject(err);
    });
    // Registered only now, as in InvalidationFeed: ioredis resubscribes after a reconnect, and
    // this second PSUBSCRIBE (a no-op for Redis) is how the hub learns the pattern is back.
    this.#subscriber.on("ready", () => {
      this.#subscriber.psubscribe(this.#pattern).then(() => this.#confirmed(), () => {/* next ready */});
    });
  }

  #confirmed(): void {
    this.#listening = true;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  /** Whether this process's channels are subscribed now (readiness). */
  get listening(): boolean {
    return this.#listening;
  }

  /**
   * Routes the events of `requestId` to `listener` at once. Resolves when events published from
   * now on reach it (at once while the subscription stands); rejects when the connection's next
   * attempt fails first. Returns the function that stops the routing.
   */
  subscribe(requestId: string, listener: MessageListener): Promise<() => void> {
    const channel = this.#keys.eventChannel(this.gatewayId, requestId);
    if (this.#listeners.has(channel)) throw new Error(`request ${requestId} already has a listener`);
    this.#listeners.set(channel, listener);
    const stop = () => {
      if (this.#listeners.get(channel) === listener) this.#listeners.delete(channel);
    };
    if (this.#listening) return Promise.resolve(stop);
    return new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject })).then(
      () => stop,
      (err) => {
        stop();
        throw err;
      },
    );
  }

  /** Requests with a live listener (for metrics and leak checks in tests). */
  get size(): number {
    return this.#listeners.size;
  }
}
