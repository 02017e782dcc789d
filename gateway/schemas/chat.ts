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
import { checkEnforceable, outputConstraint, ResponseFormatSchema } from "./response-format.ts";
import {
  assistantToolFields,
  assistantTurn,
  checkToolReferences,
  toolMessageSchema,
  toolRequestFields,
  toolResultTurn,
  ToolChoiceSchema,
  toolPlan,
  ToolsSchema,
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
    checkStrictCall(req, ctx);
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

type StrictCallFields = {
  tools?: z.infer<typeof ToolsSchema>;
  tool_choice?: z.infer<typeof ToolChoiceSchema>;
  parallel_tool_calls?: boolean;
  response_format?: unknown;
};

/**
 * The `strict` tool whose call the prompt opens (tool_choice naming it, or `required` with it
 * alone) and its index: its arguments are then constrained to its parameters.
 */
function strictForcedTool(req: StrictCallFields) {
  const name = toolPlan(toolUseOf(req)).forcedCall?.name;
  const index = req.tools?.findIndex((t) => t.function.name === name) ?? -1;
  return index >= 0 && req.tools![index].function.strict === true ? { index, tool: req.tools![index] } : undefined;
}

/** A strict forced call's parameters must be enforceable; the turn is that call, not an answer. */
function checkStrictCall(req: StrictCallFields, ctx: z.RefinementCtx): void {
  const forced = strictForcedTool(req);
  if (forced === undefined) return;
  checkEnforceable(forced.tool.function.parameters ?? {}, ["tools", forced.index, "function", "parameters"], ctx);
  if (req.response_format !== undefined) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["response_format"],
      message: "response_format applies to an answer; tool_choice forces this turn to be a strict tool call.",
      params: unsupportedValue,
    });
  }
}

export function chatToGeneration(req: ChatCompletionRequest): GenerationRequest {
  const turns = req.messages.map((m, i): ChatTurn =>
    m.role === "tool"
      ? toolResultTurn(m, req.messages.slice(0, i))
      : m.role === "assistant"
      ? assistantTurn(m)
      : { role: m.role, content: m.content }
  );
  const logprobs = req.logprobs ?? false;
  const forced = strictForcedTool(req);
  const constraint = forced
    ? { kind: "json_schema" as const, schema: JSON.stringify(forced.tool.function.parameters ?? {}), target: "call" as const }
    : outputConstraint(req.response_format);
  const tools = toolUseOf(req);
  return {
    ...commonGeneration(req, { logprobs, topLogprobs: logprobs ? req.top_logprobs ?? 0 : 0 }),
    endpoint: "chat",
    prompt: {
      kind: "chat",
      turns,
      reasoningEffort: req.reasoning_effort ?? "medium",
      ...(tools ? { tools } : {}),
      ...(constraint && !forced ? { answerOnly: true } : {}),
    },
    maxTokens: req.max_completion_tokens ?? req.max_tokens,
    ...(constraint ? { constraint } : {}),
  };
}
