/**
 * The `# Tools` section of harmony's developer message: function tools as a
 * TypeScript-like `namespace functions { ... }`, with each function's JSON
 * Schema parameters written as an inline object type. The layout follows the
 * openai/harmony format guide and renderer (comments above fields for titles,
 * descriptions and examples, `?` for optional fields, `// default: ...` after
 * the field, `oneOf` / `anyOf` as one variant per line): gpt-oss was trained on
 * exactly this shape, so deviations cost calling accuracy.
 */

/** A function the model may call (OpenAI's `tools[].function`, validated). */
export interface FunctionTool {
  name: string;
  description?: string;
  /** A JSON Schema object; absent: the function takes no arguments. */
  parameters?: Record<string, unknown>;
}

type Schema = Record<string, unknown>;

const isSchema = (v: unknown): v is Schema =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** `// default: …`: strings quoted unless they name an enum member, as harmony writes it. */
function defaultComment(schema: Schema): string | undefined {
  if (!("default" in schema)) return undefined;
  const value = schema.default;
  const quoted = typeof value === "string" && !Array.isArray(schema.enum);
  return `default: ${
    quoted ? `"${value}"` : typeof value === "string" ? value : JSON.stringify(value)
  }`;
}

function withNullable(schema: Schema, type: string): string {
  return schema.nullable === true && !type.includes("null") ? `${type} | null` : type;
}

function enumType(values: unknown[]): string {
  return values.map((v) => JSON.stringify(v)).join(" | ");
}

/** Variants of a `oneOf` / `anyOf`, one per line, each with its own trailing comments. */
function unionLines(
  variants: unknown[],
  indent: string,
  skipFirstDescription: string | undefined,
): string {
  return variants.map((variant, i) => {
    const v = isSchema(variant) ? variant : {};
    const comments: string[] = [];
    const description = typeof v.description === "string" ? v.description : undefined;
    if (description !== undefined && !(i === 0 && description === skipFirstDescription)) {
      comments.push(description);
    }
    const dflt = defaultComment(v);
    if (dflt) comments.push(dflt);
    const type = withNullable(v, typeScriptType(v, `${indent}   `));
    return `\n${indent} | ${type}${comments.length > 0 ? ` // ${comments.join(" ")}` : ""}`;
  }).join("");
}

function objectType(schema: Schema, indent: string): string {
  const lines: string[] = [];
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const properties = isSchema(schema.properties) ? schema.properties : {};
  for (const [key, raw] of Object.entries(properties)) {
    const prop = isSchema(raw) ? raw : {};
    const optional = required.has(key) ? "" : "?";
    if (typeof prop.title === "string") lines.push(`${indent}// ${prop.title}`, `${indent}//`);
    const description = typeof prop.description === "string" ? prop.description : undefined;
    const variants = Array.isArray(prop.oneOf)
      ? prop.oneOf
      : Array.isArray(prop.anyOf)
      ? prop.anyOf
      : undefined;
    if (description !== undefined) lines.push(`${indent}// ${description}`);
    if (Array.isArray(prop.examples) && prop.examples.length > 0) {
      lines.push(
        `${indent}// Examples:`,
        ...prop.examples.map((e) => `${indent}// - ${JSON.stringify(e)}`),
      );
    }
    if (variants) {
      const dflt = defaultComment(prop);
      if (dflt) lines.push(`${indent}// ${dflt}`);
      lines.push(
        `${indent}${key}${optional}:${unionLines(variants, indent, description)}`,
        `${indent},`,
      );
      continue;
    }
    const dflt = defaultComment(prop);
    const type = withNullable(prop, typeScriptType(prop, `${indent}    `));
    lines.push(`${indent}${key}${optional}: ${type},${dflt ? ` // ${dflt}` : ""}`);
  }
  const heading = typeof schema.description === "string"
    ? `${indent}// ${schema.description}\n`
    : "";
  return `${heading}{\n${lines.map((l) => `${l}\n`).join("")}${indent}}`;
}

/** A JSON Schema as a TypeScript type; anything it cannot express is `any`. */
export function typeScriptType(schema: Schema, indent = ""): string {
  const variants = Array.isArray(schema.oneOf)
    ? schema.oneOf
    : Array.isArray(schema.anyOf)
    ? schema.anyOf
    : undefined;
  if (variants) return unionLines(variants, indent, undefined);
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return enumType(schema.enum);
  if ("const" in schema) return JSON.stringify(schema.const);
  const type = schema.type;
  if (Array.isArray(type)) {
    return type.map((t) => (t === "integer" ? "number" : String(t))).join(" | ");
  }
  switch (type) {
    case "object":
      return objectType(schema, indent);
    case "string":
    case "number":
    case "boolean":
    case "null":
      return type;
    case "integer":
      return "number";
    case "array":
      return isSchema(schema.items) ? `${typeScriptType(schema.items, indent)}[]` : "Array<any>";
    default:
      return "any";
  }
}

/** True when a parameters schema declares no argument at all (rendered `() => any`). */
function takesNoArguments(parameters: Schema | undefined): boolean {
  if (parameters === undefined) return true;
  return parameters.type === "object" &&
    (!isSchema(parameters.properties) || Object.keys(parameters.properties).length === 0);
}

/** The developer message's `# Tools` section for `tools` (non-empty). */
export function toolsSection(tools: readonly FunctionTool[]): string {
  const functions = tools.map((tool) => {
    const comment = (tool.description ?? "").split("\n").filter((l) => l !== "").map((l) =>
      `// ${l}\n`
    ).join("");
    const signature = takesNoArguments(tool.parameters)
      ? "()"
      : `(_: ${typeScriptType(tool.parameters!)})`;
    return `${comment}type ${tool.name} = ${signature} => any;\n`;
  });
  return `# Tools\n\n## functions\n\nnamespace functions {\n\n${
    functions.join("\n")
  }\n} // namespace functions`;
}
