/**
 * POST /v1/chat/completions request schema (the supported subset of OpenAI's
 * CreateChatCompletionRequest) and its translation to a GenerationRequest.
 */
import { z } from "zod";
import type { ChatTurn, ReasoningEffort } from "../../shared/harmony.ts";
import {
  checkStreamOptions,
  commonRequestFields,
  commonGeneration,
  dropNullFields,
  unsupportedValue,
} from "./common.ts";
import type { GenerationRequest } from "./generation.ts";
import { outputConstraint, ResponseFormatSchema } from "./response-format.ts";
import {
  assistantToolFields,
  assistantTurn,
  checkToolReferences,
  toolMessageSchema,
  toolRequestFields,
  toolResultTurn,
  toolUseOf,
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
    message: issue.code === "invalid_union" ? "Expected a string or an array of text content parts." : ctx.defaultError,
  }),
})
  .transform((content) => typeof content === "string" ? content : content.map((p) => p.text).join("\n"));

const MessageSchema = z.discriminatedUnion("role", [
  z.object({ role: z.literal("system"), content: ContentSchema }).strict(),
  z.object({ role: z.literal("developer"), content: ContentSchema }).strict(),
  z.object({ role: z.literal("user"), content: ContentSchema }).strict(),
  z.object({
    role: z.literal("assistant"),
    content: ContentSchema.nullable().optional().transform((c) => c ?? ""),
    ...assistantToolFields,
  }).strict(),
  toolMessageSchema(ContentSchema),
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
    response_format: ResponseFormatSchema.optional(),
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
  const turns = req.messages.map((m, i): ChatTurn =>
    m.role === "tool"
      ? toolResultTurn(m, req.messages.slice(0, i))
      : m.role === "assistant"
      ? assistantTurn(m)
      : { role: m.role, content: m.content }
  );
  const logprobs = req.logprobs ?? false;
  const constraint = outputConstraint(req.response_format);
  const tools = toolUseOf(req);
  return {
    ...commonGeneration(req, { logprobs, topLogprobs: logprobs ? req.top_logprobs ?? 0 : 0 }),
    endpoint: "chat",
    prompt: {
      kind: "chat",
      turns,
      reasoningEffort: req.reasoning_effort ?? "medium",
      ...(tools ? { tools } : {}),
      ...(constraint ? { answerOnly: true } : {}),
    },
    maxTokens: req.max_completion_tokens ?? req.max_tokens,
    ...(constraint ? { constraint } : {}),
  };
}
