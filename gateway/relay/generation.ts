/**
 * One generation from enqueue to its last token: subscribe to the request's
 * channel, enqueue the job, then turn the worker's events into what the client
 * is owed: text updates (through the output filters) and one finish.
 * Cancellation (client gone, filter block, broken stream) reaches the worker.
 */
import type { Context } from "hono";
import type { Job, TokenLogprob, Usage } from "../../shared/protocol.ts";
import type { AppEnv } from "../env.ts";
import type { Logger } from "../../shared/log.ts";
import { GatewayError, needingRedis } from "../errors.ts";
import type { JobQueue } from "../queue/job-queue.ts";
import type { RequestEventStream } from "./event-stream.ts";
import type { FilterStep, OutputFilter, OutputFilterFactory } from "./output-filter.ts";

export type ClientFinishReason = "stop" | "length" | "content_filter";

export type GenerationUpdate =
  | { type: "text"; content: string; reasoning: string; logprobs: TokenLogprob[] | undefined }
  | { type: "finish"; finishReason: ClientFinishReason; usage: Usage };

/** Told of a generation's progress as the relay sees it (the metrics' timing hooks). */
export interface GenerationObserver {
  /** A worker took the job. */
  workerStarted(): void;
  /** `total` completion tokens have been generated so far. */
  tokens(total: number): void;
}

export interface GenerationDeps {
  queue: JobQueue;
  /** How long a cancellation marker lives (the whole-request deadline). */
  requestTimeoutMs: number;
  outputFilter?: OutputFilterFactory;
  /** BullMQ priority for this request (1 = highest); absent = FIFO. The tenancy tier hook. */
  priority?: (c: Context<AppEnv>) => number | undefined;
  /** Creates the observer of one generation, just before it is enqueued. */
  observe?: (c: Context<AppEnv>) => GenerationObserver;
}

export class Generation {
  readonly requestId: string;
  readonly #events: RequestEventStream;
  readonly #deps: GenerationDeps;
  readonly #promptTokens: number;
  readonly #filters: { content?: OutputFilter; reasoning?: OutputFilter };
  readonly #observer: GenerationObserver | undefined;
  readonly #log: Logger;
  #completionTokens = 0;
  #cancelled = false;

  private constructor(
    c: Context<AppEnv>,
    events: RequestEventStream,
    deps: GenerationDeps,
    observer: GenerationObserver | undefined,
  ) {
    this.requestId = c.var.requestId;
    this.#log = c.var.log;
    this.#observer = observer;
    this.#events = events;
    this.#deps = deps;
    this.#promptTokens = c.var.prompt.tokenIds.length;
    this.#filters = {
      content: deps.outputFilter?.(c, "content"),
      reasoning: deps.outputFilter?.(c, "reasoning"),
    };
  }

  /**
   * Waits for the subscription opened early in the chain (subscription.ts), then enqueues: no
   * event can be published before the gateway listens.
   */
  static async start(c: Context<AppEnv>, deps: GenerationDeps): Promise<Generation> {
    const now = Date.now();
    const { requestId, generation, prompt, principal } = c.var;
    const subscription = c.var.events;
    const deadline = subscription.deadline;
    const job: Job = {
      requestId,
      tenantId: principal.tenant.id,
      model: generation.model,
      kind: generation.endpoint,
      promptTokenIds: prompt.tokenIds,
      sampling: { ...generation.sampling, maxTokens: prompt.maxTokens },
      stop: generation.stop,
      deadline,
      enqueuedAt: now,
    };
    const events = await needingRedis(() => subscription.take());
    const observer = deps.observe?.(c);
    try {
      await needingRedis(() => deps.queue.enqueue(job, deps.priority?.(c)));
    } catch (err) {
      await events.close();
      throw err;
    }
    return new Generation(c, events, deps, observer);
  }

  /** Bytes of events waiting for the client to take them. */
  get bufferedBytes(): number {
    return this.#events.bufferedBytes;
  }

  /** Usage so far: what a cut-short response reports. */
  get usage(): Usage {
    return { promptTokens: this.#promptTokens, completionTokens: this.#completionTokens };
  }

  async *updates(): AsyncGenerator<GenerationUpdate> {
    try {
      for await (const event of this.#events) {
        if (event.type === "start") {
          // A later start is a worker resuming the stream after another one died.
          if (event.seq === 0) this.#observer?.workerStarted();
          continue;
        }
        if (event.type === "delta") {
          this.#completionTokens = event.tokens;
          this.#observer?.tokens(event.tokens);
          const content = this.#push("content", event.content);
          const reasoning = this.#push("reasoning", event.reasoning);
          const text = this.#text(content, reasoning, event.logprobs);
          if (text) yield text;
          if (content.blocked || reasoning.blocked) return yield* this.#blocked();
          continue;
        }
        if (event.finishReason === "cancelled") {
          throw new GatewayError({
            reason: "worker_error",
            code: "cancelled",
            message: "the worker cancelled the request",
          });
        }
        this.#completionTokens = event.usage.completionTokens;
        const content = this.#end("content");
        const reasoning = this.#end("reasoning");
        const text = this.#text(content, reasoning, undefined);
        if (text) yield text;
        if (content.blocked || reasoning.blocked) return yield* this.#blocked();
        yield { type: "finish", finishReason: event.finishReason, usage: event.usage };
        return;
      }
    } catch (err) {
      // A worker error ends the job on the worker's side; anything else
      // (lost events, timeout) may leave it running: stop it.
      if (!(err instanceof GatewayError && err.failure.reason === "worker_error")) {
        await this.cancel();
      }
      throw err;
    } finally {
      await this.#events.close();
    }
  }

  /** `text` through the field's output filter, if it has one. */
  #push(field: "content" | "reasoning", text: string): FilterStep {
    const filter = this.#filters[field];
    return filter ? filter.push(text) : { text, blocked: false };
  }

  /** What the field's output filter still holds back, at the end of the answer. */
  #end(field: "content" | "reasoning"): FilterStep {
    const filter = this.#filters[field];
    return filter ? filter.end() : { text: "", blocked: false };
  }

  /** The text update for the client, if there is anything to send (a plain function: per token). */
  #text(
    content: FilterStep,
    reasoning: FilterStep,
    logprobs: TokenLogprob[] | undefined,
  ): GenerationUpdate | undefined {
    if (content.text === "" && reasoning.text === "" && !logprobs?.length) return undefined;
    return { type: "text", content: content.text, reasoning: reasoning.text, logprobs };
  }

  async *#blocked() {
    await this.cancel();
    yield {
      type: "finish",
      finishReason: "content_filter",
      usage: this.usage,
    } satisfies GenerationUpdate;
  }

  /** Stops the generation wherever it is. Idempotent; never throws (the client is gone anyway). */
  async cancel(): Promise<void> {
    if (this.#cancelled) return;
    this.#cancelled = true;
    try {
      await this.#deps.queue.cancel(this.requestId, this.#deps.requestTimeoutMs);
    } catch (err) {
      this.#log.error("cancel failed", { err });
    }
    await this.#events.close();
  }
}

export interface CollectedGeneration {
  content: string;
  reasoning: string;
  logprobs: TokenLogprob[];
  finishReason: ClientFinishReason;
  usage: Usage;
}

/** Runs a generation to its end for a non-streaming response. */
export async function collect(generation: Generation): Promise<CollectedGeneration> {
  let content = "";
  let reasoning = "";
  const logprobs: TokenLogprob[] = [];
  for await (const update of generation.updates()) {
    if (update.type === "text") {
      content += update.content;
      reasoning += update.reasoning;
      if (update.logprobs) logprobs.push(...update.logprobs);
    } else {
      return {
        content,
        reasoning,
        logprobs,
        finishReason: update.finishReason,
        usage: update.usage,
      };
    }
  }
  throw new GatewayError({
    reason: "stream_integrity",
    detail: "the stream ended without a finish",
  });
}
