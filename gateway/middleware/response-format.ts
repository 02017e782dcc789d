/**
 * Checks a `json_schema` response format before the request is queued, so a schema the worker
 * could not enforce is a 400 naming the problem rather than a failed stream:
 *
 * - its size (compact JSON bytes) against the tenant's `maxSchemaBytes`: each distinct schema costs
 *   a grammar compile on a worker;
 * - that it becomes a grammar (`schemaGrammar`: the conversion the worker's compile starts with,
 *   without the vocabulary-wide part): what it refuses, e.g. a regular expression feature or an
 *   unresolvable `$ref`, comes back with xgrammar's reason.
 *
 * Schemas that passed are remembered (bounded), so a client repeating its schema pays once.
 */
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { GatewayError } from "../errors.ts";
import { GrammarError, loadXGrammar, xgrammarCall } from "../../shared/xgrammar.ts";
import { schemaGrammar } from "../../shared/json-schema-grammar.ts";

/** Where the schema came from: the response format, or the parameters of a forced strict tool. */
const paramOf = (target: "answer" | "call" | undefined) =>
  target === "call" ? "tools.function.parameters" : "response_format.json_schema.schema";
/** Schemas remembered as convertible; the oldest is forgotten first. */
const ACCEPTED_CACHE_SIZE = 1024;

const accepted = new Set<string>();
const encoder = new TextEncoder();

async function checkConvertible(schema: string): Promise<void> {
  if (accepted.has(schema)) return;
  const xgrammar = await loadXGrammar();
  const grammar = await xgrammarCall(async () => xgrammar.Grammar.fromEBNF(await schemaGrammar(xgrammar, schema, true)));
  grammar.dispose();
  if (accepted.size >= ACCEPTED_CACHE_SIZE) accepted.delete(accepted.values().next().value!);
  accepted.add(schema);
}

export function checkResponseFormat() {
  return createMiddleware<AppEnv>(async (c, next) => {
    const constraint = c.var.generation.constraint;
    if (constraint?.kind === "json_schema") {
      const bytes = encoder.encode(constraint.schema).length;
      const cap = c.var.principal.policy.maxSchemaBytes;
      if (bytes > cap) {
        throw new GatewayError({
          reason: "invalid_request",
          message: `The JSON schema is ${bytes} bytes (as compact JSON); this tenant's limit is ${cap}.`,
          param: paramOf(constraint.target),
          code: "invalid_value",
        });
      }
      try {
        await checkConvertible(constraint.schema);
      } catch (error) {
        if (!(error instanceof GrammarError)) throw error;
        throw new GatewayError({
          reason: "invalid_request",
          message: `The JSON schema cannot be enforced: ${error.message}`,
          param: paramOf(constraint.target),
          code: "unsupported_value",
        });
      }
    }
    await next();
  });
}
