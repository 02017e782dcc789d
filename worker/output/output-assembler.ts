/**
 * One request's output pipeline: engine token -> harmony/completion parser ->
 * stop strings -> the text and logprobs to publish. Pure and synchronous; the
 * caller owns the engine, timers and Redis.
 *
 * Stop strings apply to the answer (content) only: reasoning and call
 * arguments are never cut, so a stop string the model happens to think about
 * cannot end the answer before it starts.
 */
import type { Job, TokenLogprob, ToolCallDelta } from "../../shared/protocol.ts";
import type { HarmonyTokenizer } from "../../shared/tokenizer.ts";
import type { EngineTokenEvent } from "../../native/node/types.ts";
import { createOutputParser, type OutputParser } from "./output-parser.ts";
import { StopStringMatcher } from "./stop-strings.ts";
import { toTokenLogprob } from "./logprobs.ts";

export interface OutputDelta {
  content: string;
  reasoning: string;
  /** Entries for tokens of the answer, when logprobs were requested. */
  logprobs: TokenLogprob[];
  /** A piece of a function call. */
  toolCall?: ToolCallDelta;
  /** A stop string matched, or the turn ended after a call: generation must end, nothing more will be emitted. */
  stopped: boolean;
}

export class OutputAssembler {
  readonly #tokenizer: HarmonyTokenizer;
  readonly #parser: OutputParser;
  readonly #stops: StopStringMatcher;
  readonly #withLogprobs: boolean;

  constructor(
    tokenizer: HarmonyTokenizer,
    job: Pick<Job, "kind" | "requestId" | "tools" | "stop" | "sampling">,
  ) {
    this.#tokenizer = tokenizer;
    this.#parser = createOutputParser(job, tokenizer);
    this.#stops = new StopStringMatcher(job.stop);
    this.#withLogprobs = job.sampling.logprobs;
  }

  /** The model has called a function: a `stop` is the end of a tool-calling turn. */
  get madeCalls(): boolean {
    return this.#parser.calls > 0;
  }

  /** One sampled token (event.token >= 0). */
  accept(event: EngineTokenEvent): OutputDelta {
    if (this.#stops.stopped || this.#parser.turnEnded) {
      return { content: "", reasoning: "", logprobs: [], stopped: true };
    }
    const piece = this.#parser.push(event.token);
    const scan = this.#stops.push(piece.content);
    const { logprob } = event;
    const logprobs = this.#withLogprobs && piece.route === "content" && logprob !== undefined
      ? [toTokenLogprob(this.#tokenizer, event.token, logprob, event.top ?? [])]
      : [];
    return {
      content: scan.text,
      reasoning: piece.reasoning,
      logprobs,
      ...(piece.toolCall ? { toolCall: piece.toolCall } : {}),
      stopped: scan.stopped || this.#parser.turnEnded,
    };
  }

  /** Generation ended without a stop string: releases whatever was held back. */
  finish(): OutputDelta {
    if (this.#stops.stopped) return { content: "", reasoning: "", logprobs: [], stopped: true };
    const piece = this.#parser.finish();
    const scan = this.#stops.push(piece.content);
    const content = scan.stopped ? scan.text : scan.text + this.#stops.flush();
    return {
      content,
      reasoning: piece.reasoning,
      logprobs: [],
      ...(piece.toolCall ? { toolCall: piece.toolCall } : {}),
      stopped: scan.stopped,
    };
  }
}
