/**
 * Turns the engine's output tokens into the two texts a response carries:
 * `content` (the answer) and `reasoning`. Chat output is harmony-structured and
 * parsed by HarmonyOutputParser; completion output is raw text.
 */
import { createHash } from "node:crypto";
import type { HarmonyTokenizer } from "../../shared/tokenizer.ts";
import type { Job, ToolCallDelta } from "../../shared/protocol.ts";
import { Detokenizer } from "./detokenizer.ts";
import { HarmonyOutputParser } from "./harmony-parser.ts";

/** Which text a token's characters went to ("call": a function call's arguments); "none" for structural tokens. */
export type Route = "content" | "reasoning" | "call" | "none";

export interface ParsedPiece {
  content: string;
  reasoning: string;
  /** Text of a function call (its id and name with the call's first piece). */
  toolCall?: ToolCallDelta;
  /** Route of the token just pushed (decides whether it gets a logprobs entry). */
  route: Route;
}

export interface OutputParser {
  push(tokenId: number): ParsedPiece;
  /** Function calls started so far. */
  readonly calls: number;
  /** The answer is over although the engine has not stopped: generation must end. */
  readonly turnEnded: boolean;
  /** End of output: releases bytes of an incomplete character as U+FFFD. */
  finish(): ParsedPiece;
}

/** Raw completion text: every ordinary token is content, special tokens are dropped. */
export class CompletionOutputParser implements OutputParser {
  readonly #tokenizer: HarmonyTokenizer;
  readonly #detokenizer: Detokenizer;

  constructor(tokenizer: HarmonyTokenizer) {
    this.#tokenizer = tokenizer;
    this.#detokenizer = new Detokenizer(tokenizer);
  }

  push(tokenId: number): ParsedPiece {
    if (this.#tokenizer.isSpecial(tokenId)) {
      return { content: this.#detokenizer.flush(), reasoning: "", route: "none" };
    }
    return { content: this.#detokenizer.push(tokenId), reasoning: "", route: "content" };
  }

  finish(): ParsedPiece {
    return { content: this.#detokenizer.flush(), reasoning: "", route: "none" };
  }

  readonly calls = 0;
  readonly turnEnded = false;
}

/** The id of a job's `index`-th function call: derived, so a resumed stream names its calls alike. */
export function toolCallId(requestId: string, index: number): string {
  return `call_${createHash("sha256").update(`${requestId}:${index}`).digest("hex").slice(0, 24)}`;
}

export function createOutputParser(
  job: Pick<Job, "kind" | "requestId" | "tools">,
  tokenizer: HarmonyTokenizer,
): OutputParser {
  return job.kind === "chat"
    ? new HarmonyOutputParser(tokenizer, {
      ...(job.tools ? { tools: job.tools } : {}),
      callId: (index) => toolCallId(job.requestId, index),
    })
    : new CompletionOutputParser(tokenizer);
}
