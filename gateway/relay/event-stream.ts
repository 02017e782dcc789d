/**
 * The events of one request, in order, with the integrity checks that make a
 * truncated answer impossible to mistake for a complete one:
 *
 * - every event must parse against the protocol and carry the next `seq`;
 *   a gap (a lost pub/sub message, e.g. across a reconnect) or garbage ends
 *   the stream with `stream_integrity`;
 * - once the worker has started, a silence longer than the idle timeout ends
 *   it with `timeout`. A worker that dies is replaced within the job lock's
 *   retry window (another worker resumes the stream, starting with a new
 *   `start` event); the idle timeout must be longer than that window, and
 *   ends the stream when no worker resumed it;
 * - the whole request, queue wait included, must finish by its deadline;
 * - while it waits in the queue, an optional check may give up early (no
 *   worker left to take it).
 *
 * A worker `error` event is raised as a `worker_error`. Iteration ends after
 * the `done` event.
 */
import { parseStreamEvent, type StreamEvent } from "../../shared/protocol.ts";
import { type Failure, GatewayError } from "../errors.ts";
import type { EventHub } from "./event-hub.ts";

export type ProgressEvent = Exclude<StreamEvent, { type: "error" }>;

export interface EventStreamLimits {
  /** Epoch ms by which the request must be done. */
  deadline: number;
  /** Longest allowed silence once the worker has started. */
  idleTimeoutMs: number;
  /** Run every `everyMs` until a worker starts; a failure it returns ends the stream. */
  whileQueued?: { everyMs: number; check: () => Promise<Failure | undefined> };
}

export class RequestEventStream implements AsyncIterableIterator<ProgressEvent> {
  readonly #limits: EventStreamLimits;
  readonly #pending: { event: ProgressEvent; bytes: number }[] = [];
  #pendingBytes = 0;
  #unsubscribe: ((options?: { cancelled?: boolean }) => void) | undefined;
  #expectedSeq = 0;
  #started = false;
  #lastEventAt = Date.now();
  #failure: Failure | undefined;
  #finished = false;
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = 0;
  #nextQueuedCheckAt: number;

  private constructor(limits: EventStreamLimits) {
    this.#limits = limits;
    this.#nextQueuedCheckAt = Date.now() + (limits.whileQueued?.everyMs ?? Infinity);
  }

  /** Listens to the request's events; resolves once they reach it, so the job may be enqueued. */
  static async open(
    hub: EventHub,
    requestId: string,
    limits: EventStreamLimits,
  ): Promise<RequestEventStream> {
    const stream = new RequestEventStream(limits);
    stream.#unsubscribe = await hub.subscribe(requestId, (message) => stream.#receive(message));
    return stream;
  }

  #receive(message: string): void {
    if (this.#failure || this.#finished) return;
    let event: StreamEvent;
    try {
      event = parseStreamEvent(message);
    } catch {
      this.#fail({ reason: "stream_integrity", detail: "malformed event from the worker" });
      return;
    }
    if (event.seq !== this.#expectedSeq) {
      this.#fail({
        reason: "stream_integrity",
        detail: `event ${this.#expectedSeq} was lost (received ${event.seq})`,
      });
      return;
    }
    this.#expectedSeq++;
    this.#lastEventAt = Date.now();
    if (event.type === "error") {
      this.#fail({ reason: "worker_error", code: event.code, message: event.message });
      return;
    }
    if (event.type === "start") this.#started = true;
    this.#pending.push({ event, bytes: message.length });
    this.#pendingBytes += message.length;
    this.#notify();
  }

  #fail(failure: Failure): void {
    this.#failure ??= failure;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /**
   * Milliseconds until the next limit expires, and the failure it means
   * (none: it is time for the queued check).
   */
  #nextLimit(): { ms: number; failure?: Failure } {
    const now = Date.now();
    const toDeadline = this.#limits.deadline - now;
    const deadline: Failure = { reason: "timeout", detail: "the request ran past its deadline" };
    if (!this.#started) {
      const toCheck = this.#nextQueuedCheckAt - now;
      return toCheck < toDeadline ? { ms: toCheck } : { ms: toDeadline, failure: deadline };
    }
    const toIdle = this.#lastEventAt + this.#limits.idleTimeoutMs - now;
    return toIdle < toDeadline
      ? {
        ms: toIdle,
        failure: {
          reason: "timeout",
          detail:
            `the worker running the request went silent and no other worker resumed it within ${this.#limits.idleTimeoutMs} ms`,
        },
      }
      : { ms: toDeadline, failure: deadline };
  }

  async #checkQueued(): Promise<void> {
    const watch = this.#limits.whileQueued;
    if (!watch) return;
    this.#nextQueuedCheckAt = Date.now() + watch.everyMs;
    const failure = await watch.check().catch(() => undefined);
    if (failure && !this.#started) this.#fail(failure);
  }

  /**
   * The next event if one has arrived; `undefined` if none yet (then `wait`), `null` once the
   * stream is over. Throws the stream's failure. Synchronous, so a reader that finds events
   * waiting takes them without a promise each.
   */
  take(): ProgressEvent | null | undefined {
    const next = this.#pending.shift();
    if (next !== undefined) {
      this.#pendingBytes -= next.bytes;
      if (next.event.type === "done") this.#finished = true;
      return next.event;
    }
    if (this.#failure) throw new GatewayError(this.#failure);
    if (this.#finished) return null;
    const limit = this.#nextLimit();
    if (limit.ms <= 0 && limit.failure) {
      this.#fail(limit.failure);
      throw new GatewayError(this.#failure!);
    }
    return undefined;
  }

  /** Resolves when `take` may have something new: an event, a failure, or a limit reached. */
  async wait(): Promise<void> {
    const limit = this.#nextLimit();
    if (limit.ms <= 0) {
      if (!limit.failure) await this.#checkQueued();
      return;
    }
    this.#armTimer(limit.ms);
    await new Promise<void>((resolve) => this.#wake = resolve);
  }

  async next(): Promise<IteratorResult<ProgressEvent>> {
    for (;;) {
      const event = this.take();
      if (event === null) return { value: undefined, done: true };
      if (event !== undefined) return { value: event, done: false };
      await this.wait();
    }
  }

  /**
   * Wakes the reader in `ms` unless a timer already does so sooner. One timer serves many events:
   * the idle limit moves later with every event, so a timer set for the old limit just fires
   * early and `next` sets the next one. A timer per event (armed, then cleared by the event)
   * made the gateway's collector pauses the tail of every stream's latency.
   */
  #armTimer(ms: number): void {
    const at = Date.now() + ms;
    if (this.#timer !== undefined) {
      if (this.#timerAt <= at) return;
      clearTimeout(this.#timer);
    }
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#notify();
    }, ms);
  }

  /** Size of the events received and not yet taken: what a slow reader makes the gateway hold. */
  get bufferedBytes(): number {
    return this.#pendingBytes;
  }

  /** True while events have arrived that `take` has not handed out yet. */
  get hasPending(): boolean {
    return this.#pending.length > 0;
  }

  /** True once the worker has taken the job (its `start` event arrived). */
  get started(): boolean {
    return this.#started;
  }

  /**
   * Stops listening; safe to call more than once. `cancelled`: the worker has been told to stop,
   * so the events still on their way need no cancel of their own (EventHub's orphans).
   */
  close(options?: { cancelled?: boolean }): Promise<void> {
    this.#finished = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#notify();
    this.#unsubscribe?.(options);
    this.#unsubscribe = undefined;
    return Promise.resolve();
  }

  async return(): Promise<IteratorResult<ProgressEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<ProgressEvent> {
    return this;
  }
}
