/**
 * Trains the prompt-injection classifier (gateway/safety/classifier.ts) on the `train` split of the
 * corpus bench/safety_prepare.ts builds, and writes gateway/safety/classifier_weights.json.
 *
 *   node_modules/.bin/deno run --allow-all bench/safety_train.ts
 *
 * Logistic regression, AdaGrad, L2, classes weighted to balance. The bias is fixed, not learned: at
 * a low prior, text made only of features the model never saw (a key, a card number, a word list)
 * scores low instead of at the training set's class balance. The threshold is set on out-of-fold
 * scores of the training split (never on the test split) for at most 1 % false positives.
 */
import {
  encodeWeights,
  features,
  featureScale,
  margin,
  STRUCTURE_SCALE,
  WEIGHT_COUNT,
} from "../gateway/safety/classifier.ts";
import { textViews } from "../gateway/safety/normalize.ts";
import { BUILTIN_DETECTORS, type Category, detect } from "../gateway/safety/detect.ts";
import {
  type CorpusSample,
  hasJailbreakTwin,
  isPersona,
  isPersonaNamingLimits,
  loadCorpus,
  stableFraction,
  SYSTEM_PROMPT_SOURCE,
  WILD_SOURCES,
} from "./safety_data.ts";

const EPOCHS = 40;
const LEARNING_RATE = 0.5;
/** Log-odds of an attack before any feature is seen. */
const PRIOR_BIAS = -3;
// A hundred times the earlier 1e-6 for the n-grams since the in-the-wild sources joined (issue 21,
// part 3): they repeat templates, and the weaker penalty fit their wordings (97 % of the training
// split's persona jailbreaks, 83 % of the held-out ones) and gave ordinary phrases ("tell me
// about", "you reply with") attack weight. The few structure features keep the old penalty.
const L2 = 1e-4;
const L2_STRUCTURE = 1e-6;
const MAX_VALIDATION_FPR = 0.01;
const OUT = new URL("../gateway/safety/classifier_weights.json", import.meta.url);

// The role-play sets (bench/safety_roleplay*.json): until issue 21 item 3 the classifier learned
// only the benign halves of the first two, whose attacks taught it that role-play vocabulary is an
// attack (docs/SAFETY.md). Since the third and fourth sets set benign role-play of the same shapes
// and words beside every attack shape, the train halves of all four are learned, attacks and
// benign (fourth round: out of fold, public role-play requests stay at 0 of 92 flagged).
// Their benign halves weigh BENIGN_ROLEPLAY_WEIGHT times an ordinary benign prompt: they are the
// family's look-alikes, a few hundred beside thousands of prompts that share nothing with it
// (fourth round, out of fold: the fourth set's benign flagged 9.5 -> 6.8 %, one attack lost).
const BENIGN_ROLEPLAY_WEIGHT = 3;
// The in-the-wild sources label as jailbreaks every prompt of a jailbreak venue, personas that
// lift nothing among them (a Gandhi, an attorney, a coding mentor); learned as attacks they taught
// the classifier that "act as ..." is one (public role-play requests flagged: 1 -> 4 of 81 on the
// held-out split). Their persona prompts that name no limit are left out of training.
// The long benign system prompts (SYSTEM_PROMPT_SOURCE) are not learned either: they came for a
// window model that was not adopted (issue 21, item 3, seventh round), and they stay what the
// held-out split measures the blind custom GPT instructions' shape by.
const corpus = loadCorpus();
const jailbreakTwin = hasJailbreakTwin(corpus);
const train = corpus.filter((s) =>
  s.split === "train" && s.source !== SYSTEM_PROMPT_SOURCE &&
  !(s.label === "attack" && WILD_SOURCES.includes(s.source) && isPersona(s.text) &&
    !isPersonaNamingLimits(s.text))
);
/** Folds of the training split: the threshold is read off scores of models that did not see them. */
const FOLDS = 5;
const examples = train.map((s) => ({
  text: s.text,
  features: features(textViews(s.text).folded.text),
  y: s.label === "attack" ? 1 : 0,
  // Jailbreak-template collections are one group; every other attack source is one.
  group: ["gptfuzz-templates", "jailbreakchat-collection"].includes(s.source)
    ? "jailbreak-templates"
    : s.source,
  // A second, independent hash of the text (of its cluster, for the in-the-wild sources, so that a
  // template's rewordings are not in two folds) picks the fold.
  fold: Math.floor(stableFraction(`validation:${s.cluster ?? s.text}`) * FOLDS),
  cluster: s.cluster ?? s.text,
}));
type Example = (typeof examples)[number];
const bias = PRIOR_BIAS;

/** Weights fitted to `fit`, deterministically (a fixed-seed shuffle), so a rerun writes the same. */
function fitWeights(fit: Example[]): Float64Array {
  const positives = fit.filter((e) => e.y === 1).length;
  const classWeight = [fit.length / (2 * (fit.length - positives)), fit.length / (2 * positives)];
  // Within the attacks, each group weighs the same in total: the few hundred game attacks of
  // Tensor Trust would otherwise teach the model their style and little of the jailbreak templates'.
  const attackGroups = new Map<string, number>();
  for (const e of fit) {
    if (e.y === 1) attackGroups.set(e.group, (attackGroups.get(e.group) ?? 0) + 1);
  }
  const groupWeight = (e: Example) =>
    e.y === 1
      ? positives / (attackGroups.size * attackGroups.get(e.group)!)
      : e.group.startsWith("roleplay-")
      ? BENIGN_ROLEPLAY_WEIGHT
      : 1;
  const w = new Float64Array(WEIGHT_COUNT);
  const g2 = new Float64Array(WEIGHT_COUNT).fill(1e-8);
  let seed = 42;
  const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    const order = fit.map((_, i) => i).sort(() => random() - 0.5);
    for (const i of order) {
      const e = fit[i];
      const p = 1 / (1 + Math.exp(-margin(e.features, w, bias)));
      const err = (p - e.y) * classWeight[e.y] * groupWeight(e);
      const step = (buckets: Uint32Array, x: number, l2: number) => {
        for (const k of buckets) {
          const g = err * x + l2 * w[k];
          g2[k] += g * g;
          w[k] -= (LEARNING_RATE * g) / Math.sqrt(g2[k]);
        }
      };
      step(e.features.ngrams, featureScale(e.features.ngrams.length), L2);
      step(e.features.structure, STRUCTURE_SCALE, L2_STRUCTURE);
    }
  }
  return w;
}

// Out-of-fold scores: each example scored by the model fitted to the other folds. A single
// validation fifth, used until issue 21 item 3, gave thresholds from 0.6 to 0.95 for one training
// set, by which few benign templates it happened to draw; all five fifths give a steadier quantile.
const score = (e: Example, w: Float64Array) => 1 / (1 + Math.exp(-margin(e.features, w, bias)));
const outOfFold = new Map<Example, number>();
for (let fold = 0; fold < FOLDS; fold++) {
  const w = fitWeights(examples.filter((e) => e.fold !== fold));
  for (const e of examples) if (e.fold === fold) outOfFold.set(e, score(e, w));
}

// Threshold: the lowest score that keeps out-of-fold false positives within the budget. Benign
// prompts count once per near-duplicate cluster (its highest score): the in-the-wild benign
// listings hold a few jailbreak templates copied many times (a "TaleMaster" that "stands for Do
// Anything Now"), which would otherwise count as many false positives as they have copies.
const clusterScores = new Map<string | number, number>();
for (const e of examples) {
  if (e.y === 0) {
    clusterScores.set(e.cluster, Math.max(clusterScores.get(e.cluster) ?? 0, outOfFold.get(e)!));
  }
}
const benignScores = [...clusterScores.values()].sort((a, b) => b - a);
const allowedFp = Math.floor(benignScores.length * MAX_VALIDATION_FPR);
// Never below 0.6: the training split's benign prompts are too few to see short technical
// questions, which this model scores up to ~0.56 ("Tell me about paged attention." was blocked
// at 0.5, found by the browser suite); on the held-out split 0.6 keeps the jailbreak templates
// at 45/47 and halves ordinary-request false positives (docs/PERFORMANCE.md, prompt safety).
const MIN_THRESHOLD = 0.6;
const threshold = Math.min(
  0.99,
  Math.max(MIN_THRESHOLD, (benignScores[allowedFp] ?? MIN_THRESHOLD) + 1e-6),
);
const attackScores = examples.filter((e) => e.y === 1).map((e) => outOfFold.get(e)!);
const rates = (t: number) => ({
  recall: attackScores.filter((s) => s >= t).length / attackScores.length,
  fpr: benignScores.filter((s) => s >= t).length / benignScores.length,
});
for (const t of [0.5, 0.6, 0.7, 0.8, 0.9]) {
  const { recall, fpr } = rates(t);
  console.log(
    `  out of fold at ${t}: recall ${(recall * 100).toFixed(1)} %, FPR ${(fpr * 100).toFixed(2)} %`,
  );
}
// Recall at fixed out-of-fold false-positive budgets: two models compared at the threshold rule
// above may sit at different false-positive rates (the linear model at the 0.6 floor uses 0.76 %
// of the 1 % budget), so the curve is what a change to the model is compared by.
for (const budget of [0.0025, 0.005, 0.0075, 0.01]) {
  const at = rates((benignScores[Math.floor(benignScores.length * budget)] ?? 0) + 1e-6);
  console.log(
    `  out of fold, ${budget * 100} % budget: recall ${(at.recall * 100).toFixed(1)} %, FPR ${
      (at.fpr * 100).toFixed(2)
    } %`,
  );
}
const { recall, fpr } = rates(threshold);

// Rules and out-of-fold classifier together, by group of the training split: what a change to
// the training is judged by (the test split is not looked at while training changes).
const injectionOnly = { categories: new Set<Category>(["prompt_injection"]) };
const rulesFire = (text: string) =>
  detect(text, injectionOnly, { rules: BUILTIN_DETECTORS.rules }).findings.length > 0;
const isPublicRequest = (s: CorpusSample) =>
  !s.source.startsWith("roleplay-") && !WILD_SOURCES.includes(s.source) &&
  !s.source.endsWith("-answers") && s.source !== "hard-negatives";
const groups: Record<string, (s: CorpusSample) => boolean> = {
  ...Object.fromEntries(
    [...new Set(train.map((s) => s.source))].filter((source) => source.startsWith("roleplay-"))
      .sort().map((source) => [source, (s: CorpusSample) => s.source === source]),
  ),
  "in-the-wild persona jailbreaks naming limits": (s) =>
    s.label === "attack" && WILD_SOURCES.includes(s.source) && isPersonaNamingLimits(s.text),
  "in-the-wild benign role-play": (s) =>
    s.label === "benign" && WILD_SOURCES.includes(s.source) && isPersona(s.text),
  "in-the-wild benign role-play without a jailbreak twin": (s) =>
    s.label === "benign" && WILD_SOURCES.includes(s.source) && isPersona(s.text) &&
    !jailbreakTwin(s),
  "public benign requests": (s) => s.label === "benign" && isPublicRequest(s),
  "public role-play requests": (s) => s.source === "awesome-chatgpt-prompts",
};
// The classifier alone as well: the rules were written from this split and catch nearly every
// role-play-set attack in it, so with them a change to the model barely shows.
const flaggedOutOfFold: Record<string, Record<string, string>> = {};
const share = (n: number, of: number) => `${(n / of * 100).toFixed(1)} % (${n}/${of})`;
for (const [name, inGroup] of Object.entries(groups)) {
  const members = examples.filter((_, i) => inGroup(train[i]));
  const byClassifier = members.filter((e) => outOfFold.get(e)! >= threshold);
  const flagged = members.filter((e) => outOfFold.get(e)! >= threshold || rulesFire(e.text));
  flaggedOutOfFold[name] = {
    "rules + classifier": share(flagged.length, members.length),
    "classifier": share(byClassifier.length, members.length),
  };
}
console.log("flagged out of fold, training split:");
console.table(flaggedOutOfFold);
const positives = examples.filter((e) => e.y === 1).length;
const w = fitWeights(examples);

const file = encodeWeights(w, {
  version: new Date().toISOString().slice(0, 10),
  bias,
  threshold,
  training: {
    samples: examples.length,
    positives,
    folds: FOLDS,
    outOfFoldRecall: Number(recall.toFixed(4)),
    outOfFoldFalsePositiveRate: Number(fpr.toFixed(4)),
    epochs: EPOCHS,
    sources: [...new Set(train.map((s) => s.source))].sort(),
  },
});
Deno.writeTextFileSync(OUT, JSON.stringify(file, null, 1) + "\n");
console.log(
  `trained on ${examples.length} (${positives} attacks); out of ${FOLDS} folds: ` +
    `recall ${(recall * 100).toFixed(1)} %, FPR ${(fpr * 100).toFixed(2)} % at threshold ${
      threshold.toFixed(3)
    }`,
);
