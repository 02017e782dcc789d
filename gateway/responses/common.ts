/**
 * Pieces shared by the chat and completion response shapes.
 */
import type { Usage } from "../../shared/protocol.ts";
import type { ClientFinishReason, GenerationUpdate } from "../relay/generation.ts";

/** What every object of one response repeats. */
export interface ResponseMeta {
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
}

export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens served from the engine's prefix cache (OpenAI's prompt caching field). */
  prompt_tokens_details: { cached_tokens: number };
}

export function toOpenAIUsage(usage: Usage): OpenAIUsage {
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedTokens ?? 0 },
  };
}

export type TextUpdate = Extract<GenerationUpdate, { type: "text" }>;

/**
 * One streaming response's chunk shapes. Stateful per request: chat sends its
 * role delta once, completions keep a running text offset for logprobs.
 */
export interface ChunkFormat {
  /** Chunks for generated text (may be empty). */
  text(update: TextUpdate): object[];
  /** The chunk(s) carrying finish_reason. */
  finish(reason: ClientFinishReason): object[];
  /** The extra `choices: []` chunk with usage (stream_options.include_usage). */
  usage(usage: Usage): object;
}
