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
  const message = (role: string, text: string, channel?: string, recurring = false) => {
    ids.push(tok.special("<|start|>"), ...tok.encode(role));
    if (channel) ids.push(tok.special("<|channel|>"), ...tok.encode(channel));
    const body = recurring ? tok.encodeRecurring(text) : tok.encode(text);
    ids.push(tok.special("<|message|>"), ...body, tok.special("<|end|>"));
  };

  // The same for every request of a day and reasoning effort.
  message("system", systemMessageText(opts), undefined, true);
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
  return ids;
}

/** Token ids of a raw completion prompt: no template, specials encoded as text. */
export function renderCompletion(tok: HarmonyTokenizer, prompt: string): number[] {
  return tok.encode(prompt);
}
