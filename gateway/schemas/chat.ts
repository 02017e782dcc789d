/**
 * POST /v1/chat/completions request schema (the supported subset of OpenAI's
 * CreateChatCompletionRequest) and its translation to a GenerationRequest.
 */
import { z } from "zod";
import type { ChatTurn, ReasoningEffort } from "../../shared/harmony.ts";
import {
  checkStreamOptions,
  commonGeneration,
  commonRequestFields,
  dropNullFields,
  unsupportedValue,
} from "./common.ts";
import type { GenerationRequest } from "./generation.ts";
import {
  AssistantToolCallSchema,
  checkToolReferences,
  functionTools,
  toolCallsOf,
  toolChoiceOf,
  toolRequestFields,
  toolResultTurn,
} from "./tools.ts";

const SUPPORTED_EFFORTS: readonly string[] = ["low", "medium", "high"] satisfies ReasoningEffort[];

const TextPartSchema = z.object({ type: z.literal("text"), text: z.string() }).strict();

/** Content parts: only text; other part types (images, audio, files) are named in the error. */
const ContentPartSchema = z.object({ type: z.string() }).passthrough().superRefine((part, ctx) => {
  if (part.type !== "text") {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["type"],
      message: `Content parts of type '${part.type}' are not supported; only 'text' parts are.`,
      params: unsupportedValue,
    });
  }
}).pipe(TextPartSchema);

const ContentSchema = z.union([z.string(), z.array(ContentPartSchema).min(1)], {
  errorMap: (issue, ctx) => ({
    message: issue.code === "invalid_union"
      ? "Expected a string or an array of text content parts."
      : ctx.defaultError,
  }),
})
  .transform((content) =>
    typeof content === "string" ? content : content.map((p) => p.text).join("\n")
  );

const MessageSchema = z.discriminatedUnion("role", [
  z.object({ role: z.literal("system"), content: ContentSchema }).strict(),
  z.object({ role: z.literal("developer"), content: ContentSchema }).strict(),
  z.object({ role: z.literal("user"), content: ContentSchema }).strict(),
  z.object({
    role: z.literal("assistant"),
    content: ContentSchema.nullable().optional().transform((c) => c ?? ""),
    tool_calls: z.array(AssistantToolCallSchema).nullable().optional().transform((c) =>
      c ?? undefined
    ),
    /** Our own response's reasoning, sent back: replayed while a tool-calling turn is in progress. */
    reasoning_content: z.string().nullable().optional(),
    // A response message appended to the conversation as it came (the SDKs' tool loop) carries these.
    refusal: z.null().optional(),
    annotations: z.array(z.unknown()).max(0).optional(),
  }).strict(),
  z.object({ role: z.literal("tool"), content: ContentSchema, tool_call_id: z.string().min(1) })
    .strict(),
]);

export const ChatCompletionRequestSchema = z.preprocess(
  dropNullFields,
  z.object({
    ...commonRequestFields,
    messages: z.array(MessageSchema).min(1),
    ...toolRequestFields,
    max_completion_tokens: z.number().int().min(1).optional(),
    logprobs: z.boolean().optional(),
    top_logprobs: z.number().int().min(0).max(20).optional(),
    reasoning_effort: z.enum(["none", "minimal", "low", "medium", "high", "xhigh", "max"])
      .refine((effort): effort is ReasoningEffort => SUPPORTED_EFFORTS.includes(effort), {
        message: "gpt-oss supports reasoning_effort low, medium or high.",
        params: unsupportedValue,
      }).optional(),
  }).strict().superRefine((req, ctx) => {
    checkStreamOptions(req, ctx);
    checkToolReferences(req, ctx);
    if (req.top_logprobs !== undefined && req.logprobs !== true) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["top_logprobs"],
        message: "top_logprobs requires logprobs to be true.",
      });
    }
  }),
);
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

export function chatToGeneration(req: ChatCompletionRequest): GenerationRequest {
  const turns = req.messages.map((m, i): ChatTurn => {
    switch (m.role) {
      case "tool":
        return toolResultTurn(m, req.messages.slice(0, i));
      case "assistant":
        return {
          role: "assistant",
          content: m.content,
          ...(m.reasoning_content ? { reasoning: m.reasoning_content } : {}),
          ...(m.tool_calls?.length ? { toolCalls: toolCallsOf(m.tool_calls) } : {}),
        };
      default:
        return { role: m.role, content: m.content };
    }
  });
  const logprobs = req.logprobs ?? false;
  const functions = functionTools(req.tools);
  const tools = functions.length === 0 ? {} : {
    tools: {
      functions,
      choice: toolChoiceOf(req.tool_choice),
      parallel: req.parallel_tool_calls ?? true,
    },
  };
  return {
    ...commonGeneration(req, { logprobs, topLogprobs: logprobs ? req.top_logprobs ?? 0 : 0 }),
    endpoint: "chat",
    prompt: { kind: "chat", turns, reasoningEffort: req.reasoning_effort ?? "medium", ...tools },
    maxTokens: req.max_completion_tokens ?? req.max_tokens,
  };
}
