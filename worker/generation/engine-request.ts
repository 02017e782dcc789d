/**
 * How a job becomes an engine request: its sampling parameters, and the error
 * codes the gateway sees when the engine refuses it.
 */
import type { Job } from "../../shared/protocol.ts";
import { SPECIAL_TOKENS, STOP_TOKEN_IDS } from "../../shared/tokenizer.ts";
import type { EngineError, EngineSampling } from "../../native/node/types.ts";

export function toEngineSampling(job: Job): EngineSampling {
  const s = job.sampling;
  return {
    temperature: s.temperature,
    topP: s.topP,
    topK: s.topK,
    minP: s.minP,
    presencePenalty: s.presencePenalty,
    frequencyPenalty: s.frequencyPenalty,
    ...(s.seed !== undefined ? { seed: s.seed } : {}),
    maxTokens: s.maxTokens,
    // Chat ends at <|return|> (answer done) or <|call|> (tool call). A raw
    // completion ends on the same tokens: <|endoftext|> is the document end it
    // is most likely to write, and harmony-shaped text ends like a chat does.
    // With parallel calls the model may write another call after <|call|>: the
    // harmony parser ends the turn when it does not (OutputParser.turnEnded).
    stopTokenIds: job.tools?.parallel
      ? STOP_TOKEN_IDS.filter((id) => id !== SPECIAL_TOKENS["<|call|>"])
      : [...STOP_TOKEN_IDS],
    topLogprobs: s.logprobs ? s.topLogprobs : -1,
  };
}

/** An error the worker reports on the stream: `code` is what the gateway maps to an HTTP error. */
export interface StreamError {
  code: string;
  message: string;
}

const ENGINE_ERROR_CODES: Record<EngineError["code"], string> = {
  context_length: "context_length_exceeded",
  invalid_argument: "invalid_request",
  capacity: "overloaded",
  closed: "worker_shutdown",
  model: "engine_error",
  backend: "engine_error",
};

function isEngineError(err: unknown): err is EngineError {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === "string" && Object.hasOwn(ENGINE_ERROR_CODES, code);
}

/** The stream error for something `Engine.submit` threw. */
export function submitError(err: unknown): StreamError {
  if (isEngineError(err)) return { code: ENGINE_ERROR_CODES[err.code], message: err.message };
  return { code: "internal_error", message: "the engine failed to accept the request" };
}
