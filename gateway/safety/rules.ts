/**
 * The detection rules: versioned JSON files under rules/, one per category, validated with zod and
 * compiled once at load. Changing what is detected means editing data, never a handler.
 */
import { z } from "zod";
import injectionRules from "./rules/prompt_injection.json" with { type: "json" };
import payloadRules from "./rules/dangerous_payload.json" with { type: "json" };
import secretRules from "./rules/secrets.json" with { type: "json" };
import piiRules from "./rules/pii.json" with { type: "json" };
import { isChineseIdValid, isLuhnValid } from "./validators.ts";
import { leadingLiterals } from "./leading_literals.ts";
import { AhoCorasick } from "./aho_corasick.ts";

/** Categories the rule files cover; tenant word lists add `banned_words`. */
export const RULE_CATEGORIES = ["prompt_injection", "dangerous_payload", "secrets", "pii"] as const;
export type RuleCategory = typeof RULE_CATEGORIES[number];

const VALIDATORS = { luhn: isLuhnValid, cn_resident_id: isChineseIdValid } as const;

const RuleCommon = {
  id: z.string().regex(/^[a-z0-9-]+$/),
  /** Which normalized view the rule reads (see normalize.ts). */
  view: z.enum(["canonical", "folded"]),
  lang: z.string().optional(),
  description: z.string().optional(),
};

/** The usual rule: a regular expression, optionally with a check its matches must pass. */
const PatternRuleSchema = z.object({
  ...RuleCommon,
  pattern: z.string().min(1),
  /** Extra RegExp flags; `g` and `u` are always set. */
  flags: z.string().regex(/^[ims]*$/).default(""),
  /** A check a match must also pass (a check digit), named from VALIDATORS. */
  validator: z.enum(Object.keys(VALIDATORS) as [keyof typeof VALIDATORS]).optional(),
  /**
   * A literal every match contains (compared as is): a text without it is not searched. Cheap
   * where a pattern has no literal start for the regex engine to look for (an email's "@").
   */
  requires: z.string().min(1).optional(),
  /**
   * A second expression a match must follow: some match of `pattern` ends at most `within`
   * characters before the match ends. A look-behind says the same, but re-reads its whole window
   * for every match (16 KB of one repeated request cost 5 times main's detection); this is one
   * scan of the text, and only once the rule's own expression matched.
   */
  preceded_by: z.object({
    pattern: z.string().min(1),
    within: z.number().int().min(0),
  }).strict().optional(),
}).strict();

/**
 * A unit of up to `max_unit` characters repeated at least `min_repeats` times in a row (token
 * flooding). A regular expression needs a back-reference tried at every position for this, which
 * cost more than all other rules together; this is one linear pass per unit length.
 */
const RepetitionRuleSchema = z.object({
  ...RuleCommon,
  repetition: z.object({
    max_unit: z.number().int().min(1).max(16),
    min_repeats: z.number().int().min(2),
  }).strict(),
}).strict();

const RuleSchema = z.union([PatternRuleSchema, RepetitionRuleSchema]);

/**
 * `{{name}}` in a pattern (or in a later definition) stands for the definition of that name, so a
 * vocabulary several rules share ("rules, filters, limits, ethics ...") is written once.
 */
const DefinitionsSchema = z.record(z.string().regex(/^[a-z0-9-]+$/), z.string().min(1));
const REFERENCE = /\{\{([a-z0-9-]+)\}\}/g;

function expandDefinitions(pattern: string, definitions: Record<string, string>): string {
  return pattern.replace(REFERENCE, (_, name: string) => {
    const body = definitions[name];
    if (body === undefined) throw new Error(`unknown definition {{${name}}}`);
    return body;
  });
}

export const RuleFileSchema = z.object({
  category: z.enum(RULE_CATEGORIES),
  /** Bumped on every change; reported by /v1/moderations and in the flag header. */
  version: z.string().min(1),
  description: z.string(),
  definitions: DefinitionsSchema.default({}),
  rules: z.array(RuleSchema).min(1),
}).transform((file, ctx) => {
  // Each definition may use the ones before it; rules may use any.
  const definitions: Record<string, string> = {};
  for (const [name, body] of Object.entries(file.definitions)) {
    try {
      definitions[name] = expandDefinitions(body, definitions);
    } catch (e) {
      ctx.addIssue({ code: "custom", path: ["definitions", name], message: String(e) });
      return z.NEVER;
    }
  }
  const ids = new Set<string>();
  const rules = file.rules.map((rule, i) => {
    if (ids.has(rule.id)) {
      ctx.addIssue({
        code: "custom",
        path: ["rules", i, "id"],
        message: `duplicate id ${rule.id}`,
      });
    }
    ids.add(rule.id);
    if (!("pattern" in rule)) return rule;
    try {
      const pattern = expandDefinitions(rule.pattern, definitions);
      new RegExp(pattern, `gu${rule.flags}`);
      if (rule.preceded_by === undefined) return { ...rule, pattern };
      const preceded_by = {
        ...rule.preceded_by,
        pattern: expandDefinitions(rule.preceded_by.pattern, definitions),
      };
      new RegExp(preceded_by.pattern, `gu${rule.flags}`);
      return { ...rule, pattern, preceded_by };
    } catch (e) {
      ctx.addIssue({ code: "custom", path: ["rules", i, "pattern"], message: String(e) });
      return rule;
    }
  });
  return { ...file, definitions, rules };
});
export type RuleFile = z.infer<typeof RuleFileSchema>;

export type View = "canonical" | "folded";

export interface CompiledRule {
  /** `<category>/<rule id>`, unique across files. */
  readonly id: string;
  readonly category: RuleCategory;
  readonly view: View;
  /**
   * Literals every match begins with, lowercased (see leading_literals.ts); absent when the
   * pattern has none to offer, and then `find` scans every position.
   */
  readonly anchors?: readonly string[];
  /**
   * Spans `[start, end)` of the view's text that the rule matches. With `starts` (ascending),
   * matches are only tried there: the caller vouches that no match begins anywhere else
   * (RuleAnchors gives such positions).
   */
  find(text: string, starts?: readonly number[]): [number, number][];
}

/**
 * Keeps the spans that a match of `preceding` ends at most `within` characters before the end of
 * (`preceded_by` of a pattern rule): one scan for the ends, then one look-up per span.
 */
function precededFilter(preceding: RegExp, within: number) {
  return (text: string, spans: [number, number][]) => {
    if (spans.length === 0) return spans;
    const ends: number[] = [];
    preceding.lastIndex = 0;
    for (let m = preceding.exec(text); m !== null; m = preceding.exec(text)) {
      if (m[0].length === 0) preceding.lastIndex++;
      else ends.push(m.index + m[0].length);
    }
    // Spans and ends both ascend: the nearest end at or before each span's end, one pass.
    let i = -1;
    return spans.filter(([, end]) => {
      while (i + 1 < ends.length && ends[i + 1] <= end) i++;
      return i >= 0 && end - ends[i] <= within;
    });
  };
}

function patternFinder(
  pattern: string,
  flags: string,
  validate?: (match: string) => boolean,
  requires?: string,
  precededBy?: { pattern: string; within: number },
) {
  // exec() on compiled expressions kept for the process: matchAll() would clone them every call.
  const regex = new RegExp(pattern, `gu${flags}`);
  const sticky = new RegExp(pattern, `yu${flags}`);
  const preceded = precededBy &&
    precededFilter(new RegExp(precededBy.pattern, `gu${flags}`), precededBy.within);
  const find = (text: string, starts?: readonly number[]) => {
    const spans: [number, number][] = [];
    if (requires !== undefined && !text.includes(requires)) return spans;
    if (starts !== undefined) {
      // What the global scan below would find: a match consumed up to its end, even one the
      // validator rejects, and empty matches skipped.
      let until = 0;
      for (const start of starts) {
        if (start < until) continue;
        sticky.lastIndex = start;
        const m = sticky.exec(text);
        if (m === null || m[0].length === 0) continue;
        until = start + m[0].length;
        if (!validate || validate(m[0])) spans.push([start, until]);
      }
      return spans;
    }
    regex.lastIndex = 0;
    for (let m = regex.exec(text); m !== null; m = regex.exec(text)) {
      if (m[0].length === 0) {
        regex.lastIndex++;
        continue;
      }
      if (!validate || validate(m[0])) spans.push([m.index, m.index + m[0].length]);
    }
    return spans;
  };
  return preceded
    ? (text: string, starts?: readonly number[]) => preceded(text, find(text, starts))
    : find;
}

/**
 * The anchors of a pattern rule, lowercased as RuleAnchors reads the text. Under the `i` flag an
 * anchor must be ASCII: JavaScript's case folding maps a few other characters onto ASCII letters
 * in ways lowercasing does not.
 */
function ruleAnchors(pattern: string, flags: string): string[] | undefined {
  const literals = leadingLiterals(pattern);
  if (literals === undefined) return undefined;
  // deno-lint-ignore no-control-regex -- the ASCII range, control characters included
  if (flags.includes("i") && literals.some((l) => /[^\x00-\x7f]/.test(l))) return undefined;
  return [...new Set(literals.map((l) => l.toLowerCase()))];
}

/**
 * Where each anchored rule of one view may match in a text: one Aho-Corasick pass over the
 * lowercased text for the anchors of all of them, instead of every expression tried everywhere.
 */
export class RuleAnchors {
  private readonly automaton: AhoCorasick;
  /** For each anchor (automaton pattern), the indexes in `rules` of the rules it opens. */
  private readonly rulesOf: number[][] = [];

  constructor(readonly rules: readonly CompiledRule[]) {
    const index = new Map<string, number>();
    rules.forEach((rule, r) => {
      for (const anchor of rule.anchors ?? []) {
        let a = index.get(anchor);
        if (a === undefined) index.set(anchor, a = this.rulesOf.push([]) - 1);
        this.rulesOf[a].push(r);
      }
    });
    this.automaton = new AhoCorasick([...index.keys()], { asciiTable: true });
  }

  /**
   * For each anchored rule, the ascending positions where its matches may begin (none: no match);
   * `undefined` when the text cannot be read this way (lowercasing changed its length). Only the
   * rules whose anchors occur get a list of their own: most texts open few of them, and a list
   * and map entry for every rule on every request was garbage.
   */
  startsIn(text: string): RuleStarts | undefined {
    let lower = text.toLowerCase();
    if (lower.length !== text.length) return undefined;
    // The one character /iu folds to an ASCII letter that toLowerCase leaves alone (long s).
    if (lower.includes("\u017f")) lower = lower.replaceAll("\u017f", "s");
    const starts = new Map<CompiledRule, number[]>();
    for (const m of this.automaton.findAll(lower)) {
      for (const r of this.rulesOf[m.pattern]) {
        const rule = this.rules[r];
        const list = starts.get(rule);
        if (list === undefined) starts.set(rule, [m.start]);
        else list.push(m.start);
      }
    }
    for (const s of starts.values()) s.sort((a, b) => a - b);
    return { get: (rule) => starts.get(rule) ?? NO_STARTS };
  }
}

/** Where each anchored rule of a view may match in one text (RuleAnchors.startsIn). */
export interface RuleStarts {
  get(rule: CompiledRule): readonly number[];
}
const NO_STARTS: readonly number[] = Object.freeze([]);

const WORD_CHARACTER = /[\p{L}\p{N}]/u;
const hasWordCharacter = (text: string, from: number, to: number) =>
  WORD_CHARACTER.test(text.slice(from, to));

function repetitionFinder(maxUnit: number, minRepeats: number) {
  return (text: string) => {
    const spans: [number, number][] = [];
    const same = (i: number, unit: number) => text.charCodeAt(i) === text.charCodeAt(i + unit);
    for (let unit = 1; unit <= maxUnit; unit++) {
      // A flood of period `unit` is a run of at least `needed` positions i with
      // text[i] === text[i + unit]. Any such run holds a multiple of `needed`, so only those
      // positions are probed, and the run is measured around a probe that hits.
      const needed = unit * (minRepeats - 1);
      for (let probe = 0; probe + unit < text.length; probe += needed) {
        if (!same(probe, unit)) continue;
        let from = probe;
        while (from > 0 && same(from - 1, unit)) from--;
        let to = probe + 1;
        while (to + unit < text.length && same(to, unit)) to++;
        // A flood of "ab" is also one of "abab": the shortest unit reports it. A unit without a
        // letter or digit ("─", "=", "_", "-*") is a separator line, formatting that long agent
        // and system prompts are full of, not padding that carries no meaning to the model.
        if (
          to - from >= needed && hasWordCharacter(text, from, from + unit) &&
          !spans.some(([s, e]) => s < to + unit && from < e)
        ) {
          spans.push([from, to + unit]);
        }
        probe = Math.max(probe, to - (to % needed));
      }
    }
    return spans;
  };
}

export interface RuleSet {
  readonly rules: readonly CompiledRule[];
  /** The anchored rules of each view, with their automaton. */
  readonly anchors: Readonly<Record<View, RuleAnchors>>;
  /** Versions of the rule files, by category. */
  readonly versions: Readonly<Record<RuleCategory, string>>;
}

/** Validates and compiles rule files; throws naming the file and rule at the first problem. */
export function compileRuleSet(files: readonly unknown[]): RuleSet {
  const rules: CompiledRule[] = [];
  const versions = {} as Record<RuleCategory, string>;
  for (const raw of files) {
    const parsed = RuleFileSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`invalid rule file: ${issue.path.join(".")}: ${issue.message}`);
    }
    const file = parsed.data;
    versions[file.category] = file.version;
    for (const rule of file.rules) {
      rules.push({
        id: `${file.category}/${rule.id}`,
        category: file.category,
        view: rule.view,
        anchors: "pattern" in rule ? ruleAnchors(rule.pattern, rule.flags) : undefined,
        find: "pattern" in rule
          ? patternFinder(
            rule.pattern,
            rule.flags,
            rule.validator && VALIDATORS[rule.validator],
            rule.requires,
            rule.preceded_by,
          )
          : repetitionFinder(rule.repetition.max_unit, rule.repetition.min_repeats),
      });
    }
  }
  const anchoredOn = (view: View) =>
    new RuleAnchors(rules.filter((r) => r.view === view && r.anchors));
  return {
    rules,
    versions,
    anchors: { canonical: anchoredOn("canonical"), folded: anchoredOn("folded") },
  };
}

/** The rule files shipped in rules/. */
export const BUILTIN_RULES: RuleSet = compileRuleSet([
  injectionRules,
  payloadRules,
  secretRules,
  piiRules,
]);
