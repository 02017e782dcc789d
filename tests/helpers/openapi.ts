/**
 * Checks response bodies against OpenAI's published OpenAPI document
 * (`shared/specs/openai-openapi.yaml` beside the repository, not part of it:
 * where it is absent the check reports itself skipped). The document is large
 * (3 MB of YAML), so samples are collected during a suite and checked in one
 * pass, by Python's yaml and jsonschema (Draft 2020-12, which OpenAPI 3.1
 * schemas are), as the YAML helper does. The document still marks many
 * fields OpenAPI 3.0's way (\`nullable: true\`), which JSON Schema ignores: those
 * are rewritten to also accept null.
 */
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { ROOT } from "../../scripts/lib/local-stack.ts";

/** The spec beside a checkout (`../shared`) or beside a worktree of one (`../../shared`). */
export const OPENAPI_SPEC = [
  `${ROOT}../shared/specs/openai-openapi.yaml`,
  `${ROOT}../../shared/specs/openai-openapi.yaml`,
]
  .find((path) => existsSync(path));

const CHECK = `
import json, sys, yaml
from jsonschema import Draft202012Validator
spec = yaml.load(open(sys.argv[1]), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

def nullable(node):
    if isinstance(node, list):
        return [nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node

spec["components"] = nullable(spec["components"])
problems = []
for i, (schema, value) in enumerate(json.load(sys.stdin)):
    root = {"components": spec["components"], "$ref": "#/components/schemas/" + schema}
    for error in Draft202012Validator(root).iter_errors(value):
        path = "/".join(str(p) for p in error.absolute_path)
        problems.append(f"sample {i} ({schema}) at /{path}: {error.message[:300]}")
json.dump(problems, sys.stdout)
`;

/** A response body and the component schema (e.g. `CreateChatCompletionResponse`) it must satisfy. */
export type Sample = [schema: string, value: unknown];

/** The ways `samples` break their schemas (empty: all conform). Needs OPENAPI_SPEC. */
export function openApiViolations(samples: readonly Sample[]): string[] {
  if (OPENAPI_SPEC === undefined) throw new Error("the OpenAPI spec is not beside this checkout");
  const result = spawnSync("python3", ["-c", CHECK, OPENAPI_SPEC], {
    input: JSON.stringify(samples),
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (result.error || result.status !== 0) {
    throw new Error(
      `schema check failed to run (needs python3-yaml and python3-jsonschema): ${
        result.stderr || result.error
      }`,
    );
  }
  return JSON.parse(result.stdout) as string[];
}
