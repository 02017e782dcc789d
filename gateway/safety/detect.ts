/**
 * Runs every detector over one text: the rule files (by category, each rule on its normalized
 * view), the injection classifier, and the tenant's banned words; drops findings an allowed
 * exception covers. Findings carry spans in the ORIGINAL text and never the matched text, so they
 * can be logged and returned without echoing a secret.
 */
import {
  BUILTIN_RULES,
  type RuleAnchors,
  type RuleCategory,
  type RuleSet,
  type View,
} from "./rules.ts";
import { ClassifierWeightsSchema, InjectionClassifier } from "./classifier.ts";
import weightsFile from "./classifier_weights.json" with { type: "json" };
import { type NormalizedText, originalSpan, type TextViews, textViews } from "./normalize.ts";
import type { WordList } from "./word_list.ts";
import { decodedPayloads } from "./encoded.ts";

export const CATEGORIES = [
  "prompt_injection",
  "dangerous_payload",
  "secrets",
  "pii",
  "banned_words",
] as const;
export type Category = RuleCategory | "banned_words";

export interface Finding {
  readonly category: Category;
  /** `<category>/<rule id>`, `prompt_injection/classifier` or `banned_words/tenant-list`. */
  readonly rule: string;
  /** Span in the original text. */
  readonly start: number;
  readonly end: number;
  /** Classifier probability, for classifier findings. */
  readonly score?: number;
}

export interface Detectors {
  readonly rules: RuleSet;
  readonly classifier?: InjectionClassifier;
}

export const BUILTIN_CLASSIFIER = new InjectionClassifier(
  ClassifierWeightsSchema.parse(weightsFile),
);
export const BUILTIN_DETECTORS: Detectors = {
  rules: BUILTIN_RULES,
  classifier: BUILTIN_CLASSIFIER,
};

export interface DetectOptions {
  /** Categories to look for; others are skipped (cheaper when a tenant allows them). */
  readonly categories: ReadonlySet<Category>;
  readonly bannedWords?: WordList;
  readonly exceptions?: WordList;
}

export interface Detection {
  readonly findings: Finding[];
  /** Classifier probability of injection (absent when that category was not looked for). */
  readonly injectionScore?: number;
}

function viewOf(views: TextViews, name: View): NormalizedText {
  return name === "canonical" ? views.canonical : views.folded;
}

/** `views`: the text's normalized views, when the caller already has them (`textViews(text)`). */
export function detect(
  text: string,
  options: DetectOptions,
  detectors: Detectors = BUILTIN_DETECTORS,
  views: TextViews = textViews(text),
): Detection {
  const findings: Finding[] = [];
  const starts = new Map<View, ReturnType<RuleAnchors["startsIn"]>>();
  for (const rule of detectors.rules.rules) {
    if (!options.categories.has(rule.category)) continue;
    const view = viewOf(views, rule.view);
    let ruleStarts: readonly number[] | undefined;
    if (rule.anchors) {
      if (!starts.has(rule.view)) {
        starts.set(rule.view, detectors.rules.anchors[rule.view].startsIn(view.text));
      }
      ruleStarts = starts.get(rule.view)?.get(rule);
    }
    for (const [from, to] of rule.find(view.text, ruleStarts)) {
      const [start, end] = originalSpan(view, from, to);
      findings.push({ category: rule.category, rule: rule.id, start, end });
    }
  }

  if (options.categories.has("prompt_injection")) {
    findings.push(...encodedInjections(views.canonical, detectors));
  }

  let injectionScore: number | undefined;
  if (options.categories.has("prompt_injection") && detectors.classifier) {
    injectionScore = detectors.classifier.score(views.folded.text);
    if (injectionScore >= detectors.classifier.threshold && views.folded.text.length > 0) {
      findings.push({
        category: "prompt_injection",
        rule: "prompt_injection/classifier",
        start: 0,
        end: text.length,
        score: injectionScore,
      });
    }
  }

  if (options.categories.has("banned_words") && options.bannedWords) {
    for (const m of options.bannedWords.find(views.folded.text).matches) {
      const [start, end] = originalSpan(views.folded, m.start, m.end);
      findings.push({ category: "banned_words", rule: "banned_words/tenant-list", start, end });
    }
  }

  if (options.exceptions && options.exceptions.size > 0 && findings.length > 0) {
    const allowed = options.exceptions.find(views.folded.text).matches.map((m) =>
      originalSpan(views.folded, m.start, m.end)
    );
    const covered = (f: Finding) => allowed.some(([s, e]) => s <= f.start && f.end <= e);
    return { findings: findings.filter((f) => !covered(f)), injectionScore };
  }
  return { findings, injectionScore };
}

/**
 * Injections hidden in base64: each readable decoded run goes through the injection rules and the
 * classifier; a hit is reported on the encoded run's span.
 */
function encodedInjections(canonical: NormalizedText, detectors: Detectors): Finding[] {
  const findings: Finding[] = [];
  for (const payload of decodedPayloads(canonical.text)) {
    const inner = detect(payload.decoded, { categories: INJECTION_ONLY }, detectors);
    if (inner.findings.length === 0) continue;
    const [start, end] = originalSpan(canonical, payload.start, payload.end);
    findings.push({
      category: "prompt_injection",
      rule: "prompt_injection/base64-encoded",
      start,
      end,
    });
  }
  return findings;
}
const INJECTION_ONLY: ReadonlySet<Category> = new Set(["prompt_injection"]);
