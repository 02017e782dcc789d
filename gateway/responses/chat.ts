/**
 * OpenAI chat shapes: the `chat.completion` object and `chat.completion.chunk`
 * stream chunks. gpt-oss's analysis channel goes out as `reasoning_content`
 * beside `content` (the field name vLLM and others use for reasoning models).
 * Function calls are `message.tool_calls`; in a stream, `delta.tool_calls`
 * entries keyed by `index`: the first for a call carries its id, type and name
 * with empty arguments, later ones only argument text, which is how the openai
 * SDKs accumulate them.
 */
import type { TokenLogprob, ToolCall, ToolCallDelta, Usage } from "../../shared/protocol.ts";
import type { ClientFinishReason, CollectedGeneration } from "../relay/generation.ts";
import { type ChunkFormat, type ResponseMeta, type TextUpdate, toOpenAIUsage } from "./common.ts";

function toChatLogprob(lp: TokenLogprob) {
  return {
    token: lp.token,
    logprob: lp.logprob,
    bytes: lp.bytes,
    top_logprobs: lp.topLogprobs.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
  };
}

function chatLogprobs(wanted: boolean, logprobs: TokenLogprob[] | undefined) {
  return wanted ? { content: (logprobs ?? []).map(toChatLogprob), refusal: null } : null;
}

function toOpenAIToolCall(call: ToolCall) {
  return {
    id: call.id,
    type: "function",
    function: { name: call.name, arguments: call.arguments },
  };
}

function toToolCallChunk(delta: ToolCallDelta) {
  return delta.id === undefined
    ? { index: delta.index, function: { arguments: delta.arguments } }
    : {
      index: delta.index,
      id: delta.id,
      type: "function",
      function: { name: delta.name ?? "", arguments: delta.arguments },
    };
}

export function chatCompletion(meta: ResponseMeta, result: CollectedGeneration, logprobs: boolean) {
  const calls = result.toolCalls.length > 0;
  return {
    id: meta.id,
    object: "chat.completion",
    created: meta.created,
    model: meta.model,
    choices: [{
      index: 0,
      message: {
        role: "assistant",
        // OpenAI's convention: a message that only calls functions has no content.
        content: calls && result.content === "" ? null : result.content,
        reasoning_content: result.reasoning === "" ? null : result.reasoning,
        refusal: null,
        annotations: [],
        ...(calls ? { tool_calls: result.toolCalls.map(toOpenAIToolCall) } : {}),
      },
      logprobs: chatLogprobs(logprobs, result.logprobs),
      finish_reason: result.finishReason,
    }],
    usage: toOpenAIUsage(result.usage),
  };
}

export class ChatChunkFormat implements ChunkFormat {
  readonly #meta: ResponseMeta;
  readonly #includeUsage: boolean;
  readonly #logprobs: boolean;
  #roleSent = false;

  constructor(meta: ResponseMeta, options: { includeUsage: boolean; logprobs: boolean }) {
    this.#meta = meta;
    this.#includeUsage = options.includeUsage;
    this.#logprobs = options.logprobs;
  }

  #chunk(choices: object[]) {
    return {
      id: this.#meta.id,
      object: "chat.completion.chunk",
      created: this.#meta.created,
      model: this.#meta.model,
      choices,
      ...(this.#includeUsage ? { usage: null } : {}),
    };
  }

  /** The role delta opens every stream, before the first text or the finish. */
  #opening(): object[] {
    if (this.#roleSent) return [];
    this.#roleSent = true;
    return [this.#chunk([{
      index: 0,
      delta: { role: "assistant", content: "", refusal: null },
      logprobs: null,
      finish_reason: null,
    }])];
  }

  text(update: TextUpdate): object[] {
    const delta: Record<string, unknown> = {};
    if (update.content !== "") delta.content = update.content;
    if (update.reasoning !== "") delta.reasoning_content = update.reasoning;
    if (update.toolCalls) delta.tool_calls = update.toolCalls.map(toToolCallChunk);
    return [
      ...this.#opening(),
      this.#chunk([{
        index: 0,
        delta,
        logprobs: chatLogprobs(this.#logprobs, update.logprobs),
        finish_reason: null,
      }]),
    ];
  }

  finish(reason: ClientFinishReason): object[] {
    return [...this.#opening(), this.#chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: reason }])];
  }

  usage(usage: Usage): object {
    return { ...this.#chunk([]), usage: toOpenAIUsage(usage) };
  }
}
