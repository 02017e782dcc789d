/**
 * Publishes one request's stream events on its channel, numbered 0, 1, 2, ...
 * so the gateway can tell a lost message from the end of a stream.
 *
 * Deltas are coalesced: text arriving within PUBLISH_INTERVAL_MS goes out as
 * one message (at most one publish per interval, never one per token). `done`
 * and `error` first flush the pending delta, in the same publish, and end the
 * stream: nothing is published after them.
 *
 * Every publish goes through the request's `StreamLog` with the completion
 * token ids accepted since the previous one, so a worker resuming the stream
 * knows exactly which tokens its text came from. A resumed stream continues
 * the numbering (`firstSeq`).
 *
 * Publishes are issued without waiting for each other: one connection keeps
 * them in order. `drain()` waits for all of them and reports a failure. When a
 * publish reaches nobody (the gateway that asked is gone) or is refused (another
 * worker has taken the stream over), `onLost` is told once and the stream ends
 * here without another event.
 */
import type {
  FinishReason,
  StreamEvent,
  TokenLogprob,
  ToolCallDelta,
  Usage,
} from "../../shared/protocol.ts";
import { coalesceToolCallDelta } from "../../shared/tool-calls.ts";
import { type Timeline, timelineNow } from "../../shared/timeline.ts";
import type { StreamLog } from "./stream-log.ts";

/** An event as written before it gets its sequence number. */
type Unnumbered<E> = E extends unknown ? Omit<E, "seq"> : never;

export interface DeltaText {
  content: string;
  reasoning: string;
  logprobs: TokenLogprob[];
  toolCall?: ToolCallDelta;
}

/** Why a stream stopped being this worker's to write. */
export type LostReason = "unheard" | "not_owner";

export interface PublisherOptions {
  /** Sequence number of the first event (non-zero when resuming a stream). */
  firstSeq?: number;
  onLost?: (reason: LostReason) => void;
  /**
   * The request's timeline (the job asked for one): the publisher stamps its first delta and its
   * terminal event, and sends the timeline with `done`.
   */
  timeline?: Timeline;
}

export class EventPublisher {
  readonly #log: StreamLog;
  readonly #intervalMs: number;
  readonly #onLost: ((reason: LostReason) => void) | undefined;
  readonly #timeline: Timeline | undefined;
  #seq: number;
  #ended = false;
  /** Only deltas count: the first token's text goes out at once, not an interval after `start`. */
  #lastDeltaAt = -Infinity;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #pending = {
    content: "",
    reasoning: "",
    logprobs: [] as TokenLogprob[],
    toolCalls: [] as ToolCallDelta[],
  };
  #tokens = 0;
  #unrecordedTokenIds: number[] = [];
  #lost = false;
  readonly #inFlight = new Set<Promise<unknown>>();
  #failure: unknown;

  constructor(log: StreamLog, intervalMs: number, options: PublisherOptions = {}) {
    this.#log = log;
    this.#intervalMs = intervalMs;
    this.#seq = options.firstSeq ?? 0;
    this.#onLost = options.onLost;
    this.#timeline = options.timeline;
  }

  get ended(): boolean {
    return this.#ended;
  }

  start(workerId: string): void {
    this.#publish([{ type: "start", workerId }]);
  }

  /**
   * Adds text to the next delta; `tokens` is the completion token count so far,
   * `tokenIds` the tokens that produced this text (none for text released at the end).
   */
  delta(text: DeltaText, tokens: number, tokenIds: readonly number[] = []): void {
    if (this.#ended) return;
    this.#tokens = tokens;
    this.#unrecordedTokenIds.push(...tokenIds);
    const pending = this.#pending;
    pending.content += text.content;
    pending.reasoning += text.reasoning;
    pending.logprobs.push(...text.logprobs);
    if (text.toolCall) coalesceToolCallDelta(pending.toolCalls, text.toolCall);
    const hasNews = pending.content !== "" || pending.reasoning !== "" ||
      pending.logprobs.length > 0 || pending.toolCalls.length > 0;
    if (hasNews && this.#timer === undefined && this.#immediate === undefined) {
      const wait = this.#lastDeltaAt + this.#intervalMs - Date.now();
      // Nothing went out for an interval (the first text above all): publish
      // as soon as this engine step's events are handled. setTimeout(0) would
      // wait a millisecond or more, on every request's time to first token.
      if (wait <= 0) this.#immediate = setImmediate(() => this.#flush());
      else this.#timer = setTimeout(() => this.#flush(), wait);
    }
  }

  done(finishReason: FinishReason, usage: Usage): void {
    const timeline = this.#timeline;
    if (timeline !== undefined) timeline.donePublished = timelineNow();
    this.#end({
      type: "done",
      finishReason,
      usage,
      ...(timeline !== undefined ? { timeline } : {}),
    });
  }

  error(code: string, message: string): void {
    this.#end({ type: "error", code, message });
  }

  /**
   * Publishes the pending delta and stops, without a terminal event: the
   * stream stays open for the worker that resumes it.
   */
  detach(): void {
    if (this.#ended) return;
    this.#flush();
    this.#ended = true;
  }

  /** Waits until every event issued so far reached Redis; throws if one did not. */
  async drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** The last delta and the terminal event go out in one publish: a resumed stream never finds one without the other. */
  #end(event: Unnumbered<StreamEvent>): void {
    if (this.#ended) return;
    this.#publish([...this.#takePending(), event]);
    this.#ended = true;
  }

  #flush(): void {
    this.#publish(this.#takePending());
  }

  #takePending(): Unnumbered<StreamEvent>[] {
    this.#cancelFlush();
    const { content, reasoning, logprobs, toolCalls } = this.#pending;
    if (content === "" && reasoning === "" && logprobs.length === 0 && toolCalls.length === 0) {
      return [];
    }
    this.#pending = { content: "", reasoning: "", logprobs: [], toolCalls: [] };
    this.#lastDeltaAt = Date.now();
    if (this.#timeline !== undefined) this.#timeline.firstDeltaPublished ??= timelineNow();
    return [{
      type: "delta",
      content,
      reasoning,
      tokens: this.#tokens,
      ...(logprobs.length > 0 ? { logprobs } : {}),
      ...(toolCalls.length > 0 ? { toolCalls } : {}),
    }];
  }

  #cancelFlush(): void {
    clearTimeout(this.#timer);
    clearImmediate(this.#immediate);
    this.#timer = undefined;
    this.#immediate = undefined;
  }

  #publish(events: Unnumbered<StreamEvent>[]): void {
    if (this.#ended || events.length === 0) return;
    const messages = events.map((event) => JSON.stringify({ seq: this.#seq++, ...event }));
    const tokenIds = this.#unrecordedTokenIds;
    this.#unrecordedTokenIds = [];
    const sent = this.#log.append(messages, tokenIds).then(
      (outcome) => {
        if (outcome !== "heard") this.#lose(outcome);
      },
      (err: unknown) => {
        this.#failure ??= err;
      },
    );
    this.#inFlight.add(sent);
    void sent.finally(() => this.#inFlight.delete(sent));
  }

  #lose(reason: LostReason): void {
    if (this.#lost) return;
    this.#lost = true;
    this.#cancelFlush();
    this.#ended = true;
    this.#onLost?.(reason);
  }
}
