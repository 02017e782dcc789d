/**
 * What a change to the injection rules costs the input filter: the detectors with the working
 * tree's rule files against the same detectors with `prompt_injection.json` of another git revision,
 * measured in turns in one process, so both see the same machine load (on the shared dev VM the
 * absolute figures of bench/safety.ts move with the neighbours; the ratio between the two does not
 * move nearly as much).
 *
 *   node_modules/.bin/deno run --allow-all bench/safety_rules_ab.ts [revision, default HEAD~1]
 *   node_modules/.bin/deno run --allow-all bench/safety_rules_ab.ts --tree <dir>
 *
 * With `--tree`, the baseline is the whole detection (rules, rule engine, classifier code and
 * weights) of another checkout of the project in <dir>, made with
 * `git archive <revision> | tar -x -C <dir> && ln -s "$PWD/node_modules" <dir>/node_modules` (its
 * imports resolve through its own package.json): for changes to the classifier, not only rules.
 *
 * Prints a table and writes bench/results/safety_rules_ab.json. Needs the corpus (the benchmark's
 * 4 KB prompts are built from it): bench/safety_fetch_data.sh, then bench/safety_prepare.ts.
 */
import process from "node:process";
import {
  BUILTIN_DETECTORS,
  CATEGORIES,
  type Category,
  detect,
  type Detectors,
} from "../gateway/safety/detect.ts";
import { compileRuleSet } from "../gateway/safety/rules.ts";
import payloadRules from "../gateway/safety/rules/dangerous_payload.json" with { type: "json" };
import secretRules from "../gateway/safety/rules/secrets.json" with { type: "json" };
import piiRules from "../gateway/safety/rules/pii.json" with { type: "json" };
import { isOrdinaryBenignRequest, loadCorpus, prompt } from "./safety_data.ts";

const tree = Deno.args[0] === "--tree" ? Deno.args[1] : undefined;
const revision = tree ?? Deno.args[0] ?? "HEAD~1";
const RESULTS = new URL("./results/safety_rules_ab.json", import.meta.url);
/** Rounds of CALLS calls per variant, alternating; the first WARMUP rounds are not counted. */
const ROUNDS = 20;
const WARMUP = 2;
const CALLS = 200;

type Detect = (text: string, options: { categories: Set<Category> }) => unknown;
async function baselineDetect(): Promise<Detect> {
  if (tree) {
    const other = await import(
      new URL(`file://${Deno.realPathSync(tree)}/gateway/safety/detect.ts`).href
    );
    return (text, options) => other.detect(text, options, other.BUILTIN_DETECTORS);
  }
  const show = new Deno.Command("git", {
    args: ["show", `${revision}:gateway/safety/rules/prompt_injection.json`],
    cwd: new URL("..", import.meta.url),
  }).outputSync();
  if (!show.success) {
    throw new Error(`git show ${revision}: ${new TextDecoder().decode(show.stderr)}`);
  }
  const baseline: Detectors = {
    rules: compileRuleSet([
      JSON.parse(new TextDecoder().decode(show.stdout)),
      payloadRules,
      secretRules,
      piiRules,
    ]),
    classifier: BUILTIN_DETECTORS.classifier,
  };
  return (text, options) => detect(text, options, baseline);
}
const variants: Record<string, Detect> = {
  [revision]: await baselineDetect(),
  "working tree": (text, options) => detect(text, options, BUILTIN_DETECTORS),
};

const test = loadCorpus().filter((s) => s.split === "test");
// The same text as bench/safety.ts's latency rows.
const ordinary = test.filter(isOrdinaryBenignRequest);
const prompts = {
  "4 KB English instructions": prompt(ordinary.filter((s) => s.lang === "en"), 4096),
  "4 KB Chinese instructions": prompt(ordinary.filter((s) => s.lang === "zh"), 4096),
  "4 KB jailbreak text": prompt(
    test.filter((s) => s.source === "gptfuzz-templates" || s.source === "jailbreakchat-collection"),
    4096,
  ),
};
// The default policy's categories (the tenant's banned words need a list).
const options = { categories: new Set<Category>(CATEGORIES.filter((c) => c !== "banned_words")) };

const results: Record<string, Record<string, { cpuMean: number; p50: number; p99: number }>> = {};
const rows: Record<string, Record<string, string>> = {};
for (const [name, text] of Object.entries(prompts)) {
  const cpu: Record<string, number> = {};
  const walls: Record<string, number[]> = {};
  for (let round = 0; round < ROUNDS + WARMUP; round++) {
    for (const [variant, detectText] of Object.entries(variants)) {
      const counted = round >= WARMUP;
      const cpu0 = process.cpuUsage();
      for (let i = 0; i < CALLS; i++) {
        const t0 = performance.now();
        detectText(text, options);
        if (counted) (walls[variant] ??= []).push(performance.now() - t0);
      }
      const used = process.cpuUsage(cpu0);
      if (counted) cpu[variant] = (cpu[variant] ?? 0) + (used.user + used.system) / 1000;
    }
  }
  results[name] = {};
  for (const variant of Object.keys(variants)) {
    const sorted = walls[variant].sort((a, b) => a - b);
    const r = {
      cpuMean: cpu[variant] / (ROUNDS * CALLS),
      p50: sorted[Math.floor(sorted.length / 2)],
      p99: sorted[Math.floor(sorted.length * 0.99)],
    };
    results[name][variant] = r;
    rows[`${name}, ${variant}`] = {
      "cpu mean": `${r.cpuMean.toFixed(3)} ms`,
      "wall p50": `${r.p50.toFixed(3)} ms`,
      "wall p99": `${r.p99.toFixed(3)} ms`,
    };
  }
  const [before, after] = Object.keys(variants).map((v) => results[name][v].cpuMean);
  rows[`${name}, ${Object.keys(variants)[1]}`]["cpu vs " + revision] = `${
    ((after / before - 1) * 100).toFixed(1)
  } %`;
}
const load = Deno.loadavg();
console.log(
  `input filter detectors, ${
    tree ? "the tree in" : "rules of"
  } ${revision} against the working tree (load ${load.map((l) => l.toFixed(2)).join(" ")})`,
);
console.table(rows);
Deno.mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
Deno.writeTextFileSync(
  RESULTS,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      revision,
      machine: { cpus: navigator.hardwareConcurrency, loadAverage: load },
      results,
    },
    null,
    1,
  ) + "\n",
);
console.log(`wrote ${RESULTS.pathname}`);
