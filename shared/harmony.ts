/**
 * Renders requests into gpt-oss's harmony format as token ids. The layout
 * follows openai/harmony: a system message (identity, dates, reasoning effort,
 * channels), the request's own system/developer text as a developer message,
 * then the turns, ending with `<|start|>assistant` for the model to continue.
 */
import type { HarmonyTokenizer } from "./tokenizer.ts";

export type ReasoningEffort = "low" | "medium" | "high";

export interface ChatTurn {
  role: "system" | "developer" | "user" | "assistant";
  content: string;
}

export interface RenderOptions {
  reasoningEffort: ReasoningEffort;
  /** YYYY-MM-DD; omitted from the system message when absent. */
  currentDate?: string;
  /**
   * End with the final channel's header (`<|start|>assistant<|channel|>final<|message|>`): the
   * model writes its answer at once, with no analysis. Structured outputs use it, so the grammar
   * constrains exactly the answer and reasoning cannot spend the token budget first.
   */
  answerOnly?: boolean;
}

export function systemMessageText(opts: RenderOptions): string {
  const identity = [
    "You are ChatGPT, a large language model trained by OpenAI.",
    "Knowledge cutoff: 2024-06",
    ...(opts.currentDate ? [`Current date: ${opts.currentDate}`] : []),
  ].join("\n");
  return [
    identity,
    `Reasoning: ${opts.reasoningEffort}`,
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.",
  ].join("\n\n");
}

/** Token ids of a chat conversation, ready for the model to write the assistant turn. */
export function renderChat(tok: HarmonyTokenizer, turns: ChatTurn[], opts: RenderOptions): number[] {
  const ids: number[] = [];
  const message = (role: string, text: string, channel?: string) => {
    ids.push(tok.special("<|start|>"), ...tok.encode(role));
    if (channel) ids.push(tok.special("<|channel|>"), ...tok.encode(channel));
    ids.push(tok.special("<|message|>"), ...tok.encode(text), tok.special("<|end|>"));
  };

  message("system", systemMessageText(opts));
  const instructions = turns
    .filter((t) => t.role === "system" || t.role === "developer")
    .map((t) => t.content);
  if (instructions.length > 0) message("developer", `# Instructions\n\n${instructions.join("\n\n")}`);
  for (const turn of turns) {
    // Earlier answers keep only their final text: prior reasoning is not replayed.
    if (turn.role === "user") message("user", turn.content);
    else if (turn.role === "assistant") message("assistant", turn.content, "final");
  }
  ids.push(tok.special("<|start|>"), ...tok.encode("assistant"));
  if (opts.answerOnly) ids.push(tok.special("<|channel|>"), ...tok.encode("final"), tok.special("<|message|>"));
  return ids;
}

/** Token ids of a raw completion prompt: no template, specials encoded as text. */
export function renderCompletion(tok: HarmonyTokenizer, prompt: string): number[] {
  return tok.encode(prompt);
}
