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
 *
 * A worker learns that nobody reads a stream from its publish reaching nobody, and stops. With a
 * pattern, Redis counts this process as a receiver of every event on its channels, read or not,
 * so events for a request nobody here listens for any more (closed while its cancel could not
 * reach Redis) are reported to `onOrphan`, which cancels the request instead.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../../shared/redis-keys.ts";

export type MessageListener = (message: string) => void;

export interface EventHubOptions {
  /** This process's id; random by default. */
  gatewayId?: string;
  /** Told once per request of events that arrive while nobody listens for them. */
  onOrphan?: (requestId: string) => void;
}

/** Requests remembered as cancelled before the memory starts over: a repeated cancel is harmless. */
const MAX_ORPHANS = 10_000;

export class EventHub {
  readonly gatewayId: string;
  readonly #subscriber: Redis;
  readonly #keys: RedisKeys;
  readonly #pattern: string;
  readonly #listeners = new Map<string, MessageListener>();
  #listening = false;
  /** Requests waiting for the pattern's confirmation after a reconnect. */
  #waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  readonly #onOrphan: ((requestId: string) => void) | undefined;
  readonly #orphans = new Set<string>();

  /** `subscriber` is a dedicated connection: it is put in subscriber mode. */
  constructor(subscriber: Redis, keys: RedisKeys, options: EventHubOptions = {}) {
    this.gatewayId = options.gatewayId ?? crypto.randomUUID();
    this.#subscriber = subscriber;
    this.#keys = keys;
    this.#pattern = keys.eventChannelPattern(this.gatewayId);
    this.#onOrphan = options.onOrphan;
    // A channel is `head + requestId + tail`.
    const [head, tail] = keys.eventChannel(this.gatewayId, "\0").split("\0");
    subscriber.on("pmessage", (pattern: string, channel: string, message: string) => {
      if (pattern !== this.#pattern) return;
      const listener = this.#listeners.get(channel);
      if (listener !== undefined) listener(message);
      else this.#orphan(channel.slice(head.length, channel.length - tail.length));
    });
  }

  #orphan(requestId: string): void {
    if (this.#onOrphan === undefined || this.#orphans.has(requestId)) return;
    this.#remember(requestId);
    this.#onOrphan(requestId);
  }

  /** Marks `requestId` as cancelled already: its late events call for no cancel. */
  #remember(requestId: string): void {
    if (this.#onOrphan === undefined) return;
    if (this.#orphans.size >= MAX_ORPHANS) this.#orphans.clear();
    this.#orphans.add(requestId);
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
      this.#subscriber.psubscribe(this.#pattern).then(
        () => this.#confirmed(),
        () => {/* next ready */},
      );
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
   * attempt fails first. Returns the function that stops the routing (`cancelled`: the request's
   * worker has been told to stop, so its late events are not orphans).
   */
  subscribe(
    requestId: string,
    listener: MessageListener,
  ): Promise<(options?: { cancelled?: boolean }) => void> {
    const channel = this.#keys.eventChannel(this.gatewayId, requestId);
    if (this.#listeners.has(channel)) {
      throw new Error(`request ${requestId} already has a listener`);
    }
    this.#listeners.set(channel, listener);
    const stop = (options?: { cancelled?: boolean }) => {
      if (this.#listeners.get(channel) !== listener) return;
      this.#listeners.delete(channel);
      if (options?.cancelled) this.#remember(requestId);
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
