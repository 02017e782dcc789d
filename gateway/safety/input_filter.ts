/**
 * The input filter: every text part of a request (message contents, completion prompts) through the
 * detectors, each finding given its category's action from the tenant's policy, and the redacted
 * parts built. Pure (no I/O, no policy lookup), so the middleware, the benchmark and the tests run
 * the same code.
 */
import { type Category, detect } from "./detect.ts";
import type { TextViews } from "./normalize.ts";
import { type Action, ACTION_RANK, type CompiledPolicy } from "./policy.ts";

/** One text of a request. */
export interface InputPart {
  readonly text: string;
  /**
   * The operator's own instructions (system and developer messages): not checked for prompt
   * injection, which is what an injection tries to override; every other category applies.
   */
  readonly instructions?: boolean;
  /**
   * The text's normalized views (`textViews`), when the caller filters the same part more than
   * once (the middleware's two passes): built once, not per pass.
   */
  readonly views?: TextViews;
}

export interface InputFinding {
  /** Index of the text part. */
  readonly part: number;
  readonly category: Category;
  readonly rule: string;
  readonly action: Action;
  /** Span in the original part. */
  readonly start: number;
  readonly end: number;
}

export interface InputVerdict {
  /** The strongest action among the findings (`allow` when there are none). */
  readonly action: Action;
  /** The parts with every `redact` span replaced; the input parts themselves when none was. */
  readonly parts: readonly string[];
  readonly findings: readonly InputFinding[];
  /** Categories found, by the action taken on them. */
  readonly categories: Readonly<Record<Exclude<Action, "allow">, Category[]>>;
}

/** What a redacted span becomes in the prompt the model sees. */
export const redactionMarker = (category: Category) => `[REDACTED:${category}]`;

/**
 * The categories of `policy` that may be checked once the job is already queued: prompt injection
 * when the tenant blocks or flags it. Its detectors (rules, base64 payloads, the classifier) are
 * half the filter's time, and a block or a flag changes nothing the model is sent, so the gateway
 * runs them while the worker fetches the job (gateway/relay/generation.ts refuses the request
 * before relaying anything). Never a redacting category: the model must not see what is redacted.
 */
export function checkableAfterEnqueue(policy: CompiledPolicy): ReadonlySet<Category> {
  return policy.active.has("prompt_injection") &&
      policy.policy.actions.prompt_injection !== "redact"
    ? INJECTION
    : NONE;
}
const INJECTION: ReadonlySet<Category> = new Set(["prompt_injection"]);
const NONE: ReadonlySet<Category> = new Set();

/**
 * The verdict over the categories `looked` for (default: every category the policy acts on); the
 * middleware splits the policy's categories in two passes with it.
 */
export function filterInput(
  inputs: readonly InputPart[],
  policy: CompiledPolicy,
  looked: ReadonlySet<Category> = policy.active,
): InputVerdict {
  const findings: InputFinding[] = [];
  const options = {
    categories: looked,
    bannedWords: policy.bannedWords,
    exceptions: policy.exceptions,
  };
  const withoutInjection = {
    ...options,
    categories: new Set([...looked].filter((c) => c !== "prompt_injection")),
  };
  const parts = inputs.map((p) => p.text);
  inputs.forEach(({ text, instructions, views }, part) => {
    const detection = detect(
      text,
      instructions ? withoutInjection : options,
      policy.detectors,
      views,
    );
    for (const f of detection.findings) {
      const action = policy.policy.actions[f.category];
      if (action !== "allow") {
        findings.push({
          part,
          category: f.category,
          rule: f.rule,
          action,
          start: f.start,
          end: f.end,
        });
      }
    }
  });

  let action: Action = "allow";
  const categories = {
    block: new Set<Category>(),
    redact: new Set<Category>(),
    flag: new Set<Category>(),
  };
  for (const f of findings) {
    if (ACTION_RANK[f.action] > ACTION_RANK[action]) action = f.action;
    categories[f.action as Exclude<Action, "allow">].add(f.category);
  }
  return {
    action,
    parts: action === "block" ? parts : redactParts(parts, findings),
    findings,
    categories: {
      block: [...categories.block],
      redact: [...categories.redact],
      flag: [...categories.flag],
    },
  };
}

/** Replaces each part's redact spans (overlapping ones merged) with a marker, right to left. */
function redactParts(
  parts: readonly string[],
  findings: readonly InputFinding[],
): readonly string[] {
  const redactions = findings.filter((f) => f.action === "redact");
  if (redactions.length === 0) return parts;
  return parts.map((text, part) => {
    const spans = redactions.filter((f) => f.part === part).sort((a, b) => a.start - b.start);
    if (spans.length === 0) return text;
    const merged: { start: number; end: number; category: Category }[] = [];
    for (const s of spans) {
      const last = merged[merged.length - 1];
      if (last && s.start < last.end) last.end = Math.max(last.end, s.end);
      else merged.push({ start: s.start, end: s.end, category: s.category });
    }
    let out = text;
    for (let i = merged.length - 1; i >= 0; i--) {
      const m = merged[i];
      out = out.slice(0, m.start) + redactionMarker(m.category) + out.slice(m.end);
    }
    return out;
  });
}
