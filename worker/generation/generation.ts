/**
 * One request's life in the engine: submit, turn its token events into stream
 * events, and end it exactly once, whichever comes first of the engine
 * finishing, a stop string, the client cancelling, or the deadline.
 *
 * A generation can resume a stream a worker before this one started and did
 * not finish (`Resume`): the tokens that worker generated are replayed through
 * the output pipeline without being published, which rebuilds the
 * detokenizer, harmony parser and stop-string state exactly, and the engine
 * continues from prompt + those tokens with what is left of max_tokens.
 *
 * A constrained request (`job.constraint`: structured output, strict function calls) opens its
 * grammar on the grammar thread and is submitted at once: its grammar compiles while the prompt's
 * forward pass runs. After each token the grammar advances there and the next token mask goes to
 * the engine, which waits for it only when it samples that position, and then only briefly: a mask
 * still late (a grammar still compiling, the thread busy with another request's compile) costs
 * its own sequence a step, computed again, while the rest of the batch goes on.
 *
 * The terminal event (`done` or `error`) is published as soon as the end is
 * decided, so the client never waits on the engine. `run()` resolves later,
 * when the engine has let go of the sequence: the BullMQ concurrency slot is
 * only freed when the engine's batch slot is.
 */
import type { Job, JobResult, OutputConstraint, TokenLogprob, ToolCall, Usage } from "../../shared/protocol.ts";
import { accumulateToolCalls } from "../../shared/tool-calls.ts";
import type { HarmonyTokenizer } from "../../shared/tokenizer.ts";
import type { Engine, EngineSampling, EngineTokenEvent } from "../../native/node/types.ts";
import type { EventPublisher } from "../redis/event-publisher.ts";
import { OutputAssembler, type OutputDelta } from "../output/output-assembler.ts";
import { type StreamError, submitError, toEngineSampling } from "./engine-request.ts";
import { ALL_TOKENS_MASK, type GrammarService, type RemoteConstraint } from "../constraint/grammar-service.ts";
import { GrammarError } from "../../shared/xgrammar.ts";
import { type Timeline, timelineNow } from "../../shared/timeline.ts";

export type GenerationEnd =
  | { kind: "finished"; result: JobResult }
  | {
    kind: "failed";
    error: StreamError;
    usage: Usage;
    output: { content: string; reasoning: string; toolCalls: ToolCall[] };
  }
  /** This worker stopped without ending the stream: another worker continues it. */
  | { kind: "left"; reason: LeaveReason };

export type CancelReason = "client" | "deadline";

/**
 * handoff: this worker is shutting down and gives the request back to the
 * queue; superseded: another worker has taken the stream over already.
 */
export type LeaveReason = "handoff" | "superseded";

/** Where a resumed stream stands: what the previous worker generated and published. */
export interface Resume {
  tokenIds: readonly number[];
  content: string;
  reasoning: string;
  logprobs: readonly TokenLogprob[];
  toolCalls: readonly ToolCall[];
}

export interface GenerationDeps {
  engine: Engine;
  tokenizer: HarmonyTokenizer;
  publisher: EventPublisher;
  /** Runs constrained requests' grammars; absent: such requests fail. */
  grammars?: GrammarService;
  onFirstToken?: () => void;
  /** A constrained request's grammar is ready; `compileMs` is 0 for a cached grammar. */
  onGrammarReady?: (compileMs: number) => void;
  /** The request's timeline, when the job asked for one: submit, the engine's first text and last token. */
  timeline?: Timeline;
}

/** Where the client wrote the schema a constraint enforces. */
function schemaField(constraint: OutputConstraint): string {
  return constraint.kind === "tool_calls" || (constraint.kind === "json_schema" && constraint.target === "call")
    ? "tools.function.parameters"
    : "response_format.json_schema.schema";
}

export class Generation {
  readonly #deps: GenerationDeps;
  readonly #job: Job;
  readonly #assembler: OutputAssembler;
  #engineId: number | undefined;
  #engineReleased = false;
  #constraint: RemoteConstraint | undefined;
  #constraintComplete = false;
  /** Tokens the engine generated for this submission (resumed tokens are part of its prompt). */
  #enginePosition = 0;
  #end: GenerationEnd | undefined;
  #completionTokens = 0;
  /** Prompt tokens the engine found in its prefix cache (its events say so when any). */
  #cachedTokens = 0;
  #content = "";
  #reasoning = "";
  readonly #logprobs: TokenLogprob[] = [];
  readonly #toolCalls: ToolCall[] = [];
  #resolve!: (end: GenerationEnd) => void;
  readonly #settled = new Promise<GenerationEnd>((resolve) => (this.#resolve = resolve));

  readonly #resumedTokenIds: readonly number[];

  constructor(deps: GenerationDeps, job: Job, resume?: Resume) {
    this.#deps = deps;
    this.#job = job;
    this.#assembler = new OutputAssembler(deps.tokenizer, job);
    this.#resumedTokenIds = resume?.tokenIds ?? [];
    if (resume !== undefined) {
      // Its text was published already: only the pipeline's state is wanted.
      for (const token of resume.tokenIds) this.#assembler.accept({ token });
      this.#completionTokens = resume.tokenIds.length;
      this.#content = resume.content;
      this.#reasoning = resume.reasoning;
      this.#logprobs.push(...resume.logprobs);
      this.#toolCalls.push(...resume.toolCalls.map((call) => ({ ...call })));
    }
  }

  /** Submits to the engine; resolves once the request has ended and the engine released it. */
  async run(): Promise<GenerationEnd> {
    if (this.#job.constraint !== undefined && this.#end === undefined) this.#openConstraint();
    const sampling = { ...toEngineSampling(this.#job), constrained: this.#constraint !== undefined };
    const resumedFinish = this.#finishOfResumedTokens(sampling);
    if (this.#end === undefined && resumedFinish !== undefined) {
      // The previous worker died between the last token and its finish event.
      this.#engineReleased = true;
      this.#onEngineFinish(resumedFinish);
    } else if (this.#end === undefined) {
      try {
        this.#engineId = this.#deps.engine.submit(
          this.#enginePrompt(),
          { ...sampling, maxTokens: sampling.maxTokens - this.#resumedTokenIds.length },
          (events, stepAt) => this.#onEngineEvents(events, stepAt),
          this.#job.tenantId,
          // The cache salt: one tenant's prompts never share KV with (nor time) another's.
          this.#job.tenantId,
        );
        if (this.#deps.timeline !== undefined) this.#deps.timeline.submitted = timelineNow();
        this.#advanceConstraint();
      } catch (err) {
        this.#engineReleased = true;
        this.#fail(submitError(err));
      }
    } else {
      // Cancelled before it was submitted: there is nothing to release.
      this.#engineReleased = true;
    }
    this.#settleIfReleased();
    const end = await this.#settled;
    this.#constraint?.dispose();
    return end;
  }

  /**
   * Prompt and resumed tokens as one Int32Array: the addon copies it in one go, where an array
   * of numbers is read element by element (1 024 reads before the engine has the request).
   */
  #enginePrompt(): Int32Array {
    const prompt = this.#job.promptTokenIds;
    const ids = new Int32Array(prompt.length + this.#resumedTokenIds.length);
    ids.set(prompt);
    ids.set(this.#resumedTokenIds, prompt.length);
    return ids;
  }

  /** The grammar of a constrained request, advanced past the tokens of a resumed stream. */
  #openConstraint(): void {
    if (this.#deps.grammars === undefined) {
      this.#fail({ code: "invalid_request", message: "this worker does not serve structured outputs" });
      return;
    }
    this.#constraint = this.#deps.grammars.open(this.#job.constraint!, this.#resumedTokenIds);
    this.#constraint.ready.then((compileMs) => this.#deps.onGrammarReady?.(compileMs), (err: unknown) => {
      if (this.#end !== undefined) return;
      this.#fail(
        err instanceof GrammarError
          ? { code: "invalid_request", message: `${schemaField(this.#job.constraint!)}: ${err.message}` }
          : { code: "grammar_error", message: `the grammar could not be prepared: ${String(err)}` },
      );
      this.#releaseEngine();
    });
  }

  /**
   * Advances the grammar past `token` (none before the first) and hands the engine the mask of its
   * next position; the engine waits for it only when it samples that position, so it is computed
   * while the step runs. A grammar that allows nothing ends the request.
   */
  #advanceConstraint(token?: number): void {
    const constraint = this.#constraint;
    const id = this.#engineId;
    if (constraint === undefined || id === undefined) return;
    const position = this.#enginePosition;
    if (this.#constraintComplete) {
      this.#deps.engine.setTokenMask(id, position, ALL_TOKENS_MASK);
      return;
    }
    constraint.advance(token).then((step) => {
      if (this.#end !== undefined) return;
      switch (step.kind) {
        case "mask":
          this.#deps.engine.setTokenMask(id, position, step.mask);
          return;
        case "free":
          this.#deps.engine.setTokenMask(id, position, ALL_TOKENS_MASK);
          return;
        case "complete":
          // The value ended with its closing token and the engine goes on (more calls after a
          // forced one): the rest of the turn is free.
          this.#constraintComplete = true;
          this.#deps.engine.setTokenMask(id, position, ALL_TOKENS_MASK);
          return;
        case "dead_end":
          this.#fail({
            code: "grammar_dead_end",
            message: "the response_format grammar allows no next token: the output cannot be completed",
          });
          break;
        case "rejected":
          this.#fail({ code: "grammar_error", message: `the engine sampled token ${token}, which the grammar does not allow` });
          break;
      }
      this.#releaseEngine();
    }).catch((err: unknown) => {
      // A grammar that failed to compile is reported by `ready`.
      if (this.#end !== undefined || err instanceof GrammarError) return;
      this.#fail({ code: "grammar_error", message: `computing the next token mask failed: ${String(err)}` });
      this.#releaseEngine();
    });
  }

  /** How the engine would have finished a request that already ends with the resumed tokens. */
  #finishOfResumedTokens(sampling: EngineSampling): "stop" | "length" | undefined {
    const tokens = this.#resumedTokenIds;
    if (tokens.length === 0) return undefined;
    if (sampling.stopTokenIds.includes(tokens[tokens.length - 1])) return "stop";
    return tokens.length >= sampling.maxTokens ? "length" : undefined;
  }

  cancel(reason: CancelReason): void {
    if (this.#end !== undefined) return;
    if (reason === "client") this.#finish("cancelled");
    else this.#fail({ code: "timeout", message: "the request did not finish before its deadline" });
    this.#releaseEngine();
  }

  /**
   * Stops generating without ending the stream. What was generated is
   * published (and so recorded) first, so the worker that resumes the stream
   * continues from the last token this one produced.
   */
  leave(reason: LeaveReason): void {
    if (this.#end !== undefined) return;
    this.#deps.publisher.detach();
    this.#end = { kind: "left", reason };
    this.#releaseEngine();
  }

  #onEngineEvents(events: EngineTokenEvent[], stepAt?: number): void {
    const deliveredAt = this.#deps.timeline !== undefined ? timelineNow() : 0;
    for (const event of events) {
      if (event.cachedTokens !== undefined) this.#cachedTokens = event.cachedTokens;
      if (event.token >= 0 && this.#end === undefined) {
        const text = this.#acceptToken(event);
        if (text && this.#deps.timeline !== undefined) stampFirstText(this.#deps.timeline, stepAt, deliveredAt);
      }
      if (event.finish !== undefined) {
        if (this.#deps.timeline !== undefined && stepAt !== undefined) this.#deps.timeline.engineLastToken = stepAt;
        this.#engineReleased = true;
        if (this.#end === undefined) this.#onEngineFinish(event.finish);
      }
    }
    this.#settleIfReleased();
  }

  /** True when the token made text (or a piece of a call) to publish. */
  #acceptToken(event: EngineTokenEvent): boolean {
    if (this.#completionTokens++ === 0) this.#deps.onFirstToken?.();
    if (this.#constraint !== undefined) {
      this.#enginePosition++;
      if (event.finish === undefined) this.#advanceConstraint(event.token);
    }
    const delta = this.#assembler.accept(event);
    this.#append(delta, [event.token]);
    if (delta.stopped) {
      this.#finish("stop");
      this.#releaseEngine();
    }
    return delta.content !== "" || delta.reasoning !== "" || delta.toolCall !== undefined;
  }

  #onEngineFinish(finish: NonNullable<EngineTokenEvent["finish"]>): void {
    switch (finish) {
      case "stop":
      case "length":
        this.#append(this.#assembler.finish());
        this.#finish(finish);
        return;
      case "cancelled":
        // Only this class cancels its requests, and it has decided the end first;
        // an engine-side cancellation means the engine is shutting down.
        this.#fail({
          code: "worker_shutdown",
          message: "the worker shut down before the request finished",
        });
        return;
      case "error":
        this.#fail({ code: "engine_error", message: "the engine failed while generating" });
        return;
      case "mask_timeout":
        this.#fail({
          code: "grammar_timeout",
          message: "the response_format grammar did not give the next token mask in time",
        });
        return;
    }
  }

  /** `tokenIds`: the tokens that produced `delta` (none for text released at the end). */
  #append(delta: OutputDelta, tokenIds: number[] = []): void {
    this.#content += delta.content;
    this.#reasoning += delta.reasoning;
    this.#logprobs.push(...delta.logprobs);
    if (delta.toolCall) accumulateToolCalls(this.#toolCalls, [delta.toolCall]);
    this.#deps.publisher.delta(delta, this.#completionTokens, tokenIds);
  }

  #usage(): Usage {
    const promptTokens = this.#job.promptTokenIds.length;
    // A resumed stream's engine prompt also holds the tokens generated before.
    const cachedTokens = Math.min(this.#cachedTokens, promptTokens);
    return {
      promptTokens,
      completionTokens: this.#completionTokens,
      ...(cachedTokens > 0 ? { cachedTokens } : {}),
    };
  }

  #finish(reason: JobResult["finishReason"]): void {
    const usage = this.#usage();
    // A turn that called functions ends (at <|call|>, or after the calls) to let the caller run them.
    const finishReason = reason === "stop" && this.#assembler.madeCalls ? "tool_calls" : reason;
    this.#end = {
      kind: "finished",
      result: {
        content: this.#content,
        reasoning: this.#reasoning,
        finishReason,
        usage,
        ...(this.#job.sampling.logprobs ? { logprobs: this.#logprobs } : {}),
        ...(this.#toolCalls.length > 0 ? { toolCalls: this.#toolCalls } : {}),
      },
    };
    this.#deps.publisher.done(finishReason, usage);
  }

  #fail(error: StreamError): void {
    this.#end = {
      kind: "failed",
      error,
      usage: this.#usage(),
      output: { content: this.#content, reasoning: this.#reasoning, toolCalls: this.#toolCalls },
    };
    this.#deps.publisher.error(error.code, error.message);
  }

  /** Stops the engine's work on this request; its final event then releases it. */
  #releaseEngine(): void {
    if (this.#engineId === undefined || this.#engineReleased) return;
    // false: the request had already finished in the engine; nothing is held.
    if (!this.#deps.engine.cancel(this.#engineId)) this.#engineReleased = true;
    this.#settleIfReleased();
  }

  #settleIfReleased(): void {
    if (this.#end !== undefined && this.#engineReleased) this.#resolve(this.#end);
  }
}

/** The first step that made text: when the engine handed it over and when it reached JavaScript. */
function stampFirstText(timeline: Timeline, stepAt: number | undefined, deliveredAt: number): void {
  if (timeline.firstTextDelivered !== undefined) return;
  if (stepAt !== undefined) timeline.engineFirstText = stepAt;
  timeline.firstTextDelivered = deliveredAt;
}
