/** Test and bench inputs: sampling parameters and harmony-formatted model output. */
import type { Sampling } from "../../shared/protocol.ts";
import {
  type HarmonyTokenizer,
  SPECIAL_TOKENS,
  type SpecialToken,
} from "../../shared/tokenizer.ts";

/** Neutral sampling (temperature 1, no truncation, no penalties, no logprobs), with overrides. */
export function sampling(overrides: Partial<Sampling> = {}): Sampling {
  return {
    temperature: 1,
    topP: 1,
    topK: 0,
    minP: 0,
    presencePenalty: 0,
    frequencyPenalty: 0,
    maxTokens: 100,
    topLogprobs: 0,
    logprobs: false,
    ...overrides,
  };
}

export interface HarmonyMessage {
  channel: string;
  text: string;
}

/**
 * Token ids of an assistant turn as the model writes it after the prompt's
 * `<|start|>assistant`: the first message opens with its channel header, later
 * ones with `<|start|>assistant`; messages are closed by `<|end|>`, the last by
 * `close` (nothing: generation still under way).
 */
export function harmonyOutput(
  tokenizer: HarmonyTokenizer,
  messages: HarmonyMessage[],
  close?: SpecialToken,
): number[] {
  const ids: number[] = [];
  messages.forEach((m, i) => {
    if (i > 0) {
      ids.push(
        SPECIAL_TOKENS["<|end|>"],
        SPECIAL_TOKENS["<|start|>"],
        ...tokenizer.encode("assistant"),
      );
    }
    ids.push(
      SPECIAL_TOKENS["<|channel|>"],
      ...tokenizer.encode(m.channel),
      SPECIAL_TOKENS["<|message|>"],
    );
    ids.push(...tokenizer.encode(m.text));
  });
  if (close) ids.push(SPECIAL_TOKENS[close]);
  return ids;
}

/** Token ids of harmony text as written in docs: `<|name|>` is that special token, the rest ordinary text. */
export function harmonyTextIds(tokenizer: HarmonyTokenizer, text: string): number[] {
  return text.split(/(<\|[a-z]+\|>)/).flatMap((part) =>
    part in SPECIAL_TOKENS ? [SPECIAL_TOKENS[part as SpecialToken]] : tokenizer.encode(part)
  );
}
