/**
 * Parses the JSON body and validates it with the endpoint's zod schema, then
 * turns it into the endpoint-neutral GenerationRequest the rest of the chain
 * uses. Malformed JSON and schema violations (with the field path) are 400s.
 */
import { createMiddleware } from "hono/factory";
import type { z } from "zod";
import type { AppEnv } from "../env.ts";
import { parseJsonObject } from "../json-body.ts";
import type { GenerationRequest } from "../schemas/generation.ts";
import { fromZodError } from "../schemas/issues.ts";
import { timelineNow } from "../../shared/timeline.ts";

export function validateGeneration<S extends z.ZodTypeAny>(
  schema: S,
  toGeneration: (request: z.infer<S>) => GenerationRequest,
) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const body = parseJsonObject(await c.req.text());
    const parsed = schema.safeParse(body);
    if (!parsed.success) throw fromZodError(parsed.error);
    c.set("generation", toGeneration(parsed.data));
    if (c.var.timeline !== undefined) c.var.timeline.validated = timelineNow();
    await next();
  });
}
