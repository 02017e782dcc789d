/**
 * Renders requests into gpt-oss's harmony format as token ids. The layout
 * follows openai/harmony: a system message (identity, dates, reasoning effort,
 * channels), the request's own system/developer text and its function tools as
 * a developer message, then the turns, ending with `<|start|>assistant` for the
 * model to continue.
 *
 * Tool calling (harmony's "Function calling"): a call is an assistant message
 * on the commentary channel addressed to `functions.NAME`, `<|constrain|>json`,
 * ended by `<|call|>`; its result is a message from `functions.NAME` to the
 * assistant on the commentary channel. Earlier reasoning is replayed only for
 * the turn still in progress (after the last final answer): the model called
 * tools as part of that chain of thought, while reasoning that led to a final
 * answer is dropped, as harmony prescribes.
 */
import type { HarmonyTokenizer } from "./tokenizer.ts";
import { type FunctionTool, toolsSection } from "./harmony-tools.ts";

export type { FunctionTool } from "./harmony-tools.ts";

export type ReasoningEffort = "low" | "medium" | "high";

/** A call the assistant made: `arguments` is the JSON text as written. */
export interface ToolCall {
  name: string;
  arguments: string;
}

export type ChatTurn =
  | { role: "system" | "developer" | "user"; content: string }
  /**
   * `content`: the answer (final channel), or with `toolCalls` the preamble
   * shown to the user before the calls (commentary channel). `reasoning`: the
   * analysis channel, replayed only while the turn is in progress.
   */
  | { role: "assistant"; content: string; reasoning?: string; toolCalls?: ToolCall[] }
  /** The result of a call to function `name`. */
  | { role: "tool"; name: string; content: string };

/**
 * The prompt already opens the call the model must make (tool_choice): the
 * named function's arguments, or (`name` undefined) any function's name.
 */
export interface ForcedCall {
  name?: string;
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
  /** Functions the model may call (rendered in the developer message). */
  tools?: readonly FunctionTool[];
  forcedCall?: ForcedCall;
}

export function systemMessageText(
  opts: Pick<RenderOptions, "reasoningEffort" | "currentDate" | "tools">,
): string {
  const identity = [
    "You are ChatGPT, a large language model trained by OpenAI.",
    "Knowledge cutoff: 2024-06",
    ...(opts.currentDate ? [`Current date: ${opts.currentDate}`] : []),
  ].join("\n");
  const channels =
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.";
  return [
    identity,
    `Reasoning: ${opts.reasoningEffort}`,
    opts.tools?.length
      ? `${channels}\nCalls to these tools must go to the commentary channel: 'functions'.`
      : channels,
  ].join("\n\n");
}

/** The header text after `<|start|>assistant` of a call to `name` (`undefined`: up to the name). */
export function callHeader(name: string | undefined): string {
  return name === undefined ? "commentary to=functions." : `commentary to=functions.${name} `;
}

/** Index just past the last assistant answer: reasoning before it is dropped. */
function afterLastFinal(turns: readonly ChatTurn[]): number {
  for (let i = turns.length - 1; i >= 0; i--) {
    const turn = turns[i];
    if (turn.role === "assistant" && !turn.toolCalls?.length) return i + 1;
  }
  return 0;
}

/** Token ids of a chat conversation, ready for the model to write the assistant turn. */
export function renderChat(
  tok: HarmonyTokenizer,
  turns: readonly ChatTurn[],
  opts: RenderOptions,
): number[] {
  const ids: number[] = [];
  const header = (author: string, channel?: string) => {
    ids.push(tok.special("<|start|>"), ...tok.encode(author));
    if (channel) ids.push(tok.special("<|channel|>"), ...tok.encode(channel));
  };
  const message = (author: string, text: string, channel?: string, recurring = false) => {
    header(author, channel);
    const body = recurring ? tok.encodeRecurring(text) : tok.encode(text);
    ids.push(tok.special("<|message|>"), ...body, tok.special("<|end|>"));
  };
  const callOpening = (name: string | undefined) => {
    header("assistant", callHeader(name));
    if (name !== undefined) {
      ids.push(tok.special("<|constrain|>"), ...tok.encode("json"), tok.special("<|message|>"));
    }
  };

  // The same for every request of a day and reasoning effort.
  message("system", systemMessageText(opts), undefined, true);
  const developer = turns.flatMap((t) =>
    t.role === "system" || t.role === "developer" ? [t.content] : []
  );
  const sections = [
    ...(developer.length > 0 ? [`# Instructions\n\n${developer.join("\n\n")}`] : []),
    ...(opts.tools?.length ? [toolsSection(opts.tools)] : []),
  ];
  if (sections.length > 0) message("developer", sections.join("\n\n"));

  const inProgress = afterLastFinal(turns);
  turns.forEach((turn, i) => {
    switch (turn.role) {
      case "user":
        message("user", turn.content);
        return;
      case "tool":
        message(`functions.${turn.name} to=assistant`, turn.content, "commentary");
        return;
      case "assistant":
        if (turn.reasoning && i >= inProgress) message("assistant", turn.reasoning, "analysis");
        if (!turn.toolCalls?.length) {
          message("assistant", turn.content, "final");
          return;
        }
        if (turn.content !== "") message("assistant", turn.content, "commentary");
        for (const call of turn.toolCalls) {
          callOpening(call.name);
          ids.push(...tok.encode(call.arguments), tok.special("<|call|>"));
        }
        return;
    }
  });
  if (opts.forcedCall) callOpening(opts.forcedCall.name);
  else header("assistant");
  if (opts.answerOnly && !opts.forcedCall) {
    ids.push(tok.special("<|channel|>"), ...tok.encode("final"), tok.special("<|message|>"));
  }
  return ids;
}

/** Token ids of a raw completion prompt: no template, specials encoded as text. */
export function renderCompletion(tok: HarmonyTokenizer, prompt: string): number[] {
  return tok.encode(prompt);
}
