/**
 * A small learned detector for prompt injection and jailbreak text: logistic regression over hashed
 * word unigrams and bigrams (Latin script) and character unigrams and bigrams (Chinese), read from
 * the folded view, and over structure features (`structureBuckets`): which kinds of cue a text
 * combines, and how closely. Pure TypeScript; it scores a 4 KB prompt in well under a millisecond
 * (bench/safety.ts measures it).
 *
 * Weights are trained by bench/safety_train.ts on public data (docs/SAFETY.md lists the sources)
 * and committed as classifier_weights.json: int8-quantized, base64, 2^15 buckets.
 */
import { z } from "zod";

export const FEATURE_BITS = 15;
const BUCKETS = 1 << FEATURE_BITS;
/**
 * Structure features have a table of their own after the n-gram buckets: they occur in most
 * attacks at a weight independent of length, and sharing a bucket with a common word gave that
 * word their weight ("Act as a Linux terminal ..." scored 0.63 through such collisions).
 */
const STRUCTURE_BITS = 10;
const STRUCTURE_BUCKETS = 1 << STRUCTURE_BITS;
/** Weights in the file: the n-gram buckets, then the structure buckets. */
export const WEIGHT_COUNT = BUCKETS + STRUCTURE_BUCKETS;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function fnvString(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h;
}
function fnvRange(h: number, text: string, from: number, to: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ text.charCodeAt(i), FNV_PRIME);
  return h;
}

const enum Kind {
  Word,
  Cjk,
  Punctuation,
}
/** Hash states after the prefix naming a feature's kind ("w:", "ww:", ...). */
const UNIGRAM_SEED = [
  fnvString(FNV_OFFSET, "w:"),
  fnvString(FNV_OFFSET, "c:"),
  fnvString(FNV_OFFSET, "p:"),
];
const NGRAM_SEED = fnvString(FNV_OFFSET, "g:");
const BIGRAM_SEED = [fnvString(FNV_OFFSET, "ww:"), fnvString(FNV_OFFSET, "cc:")];

const isWordCode = (c: number) =>
  (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x27;
const isCjkCode = (c: number) => (c >= 0x3400 && c <= 0x9fff) || (c >= 0xf900 && c <= 0xfaff);
const kindOf = (c: number) =>
  isWordCode(c) ? Kind.Word : isCjkCode(c) ? Kind.Cjk : Kind.Punctuation;

/**
 * Weight of each present feature in a text of `n` features: 1/sqrt(n), so long texts do not score
 * higher just for having more words, but never more than 1/sqrt(FEATURE_FLOOR), so a short
 * ordinary question is not decided by two or three words the attacks happened to use.
 */
const FEATURE_FLOOR = 24;
export const featureScale = (n: number) => 1 / Math.sqrt(Math.max(n, FEATURE_FLOOR));

/** Stamp per bucket: a bucket is already taken in this call when its stamp equals the call's. */
const seen = new Int32Array(BUCKETS);
let call = 0;

/**
 * Cue classes of the jailbreak family's structure (issue 21, part 3). A persona jailbreak combines
 * a persona directive with a claim that the persona is free of the model's limits, usually with
 * the refusals it must not give, the harms it will now produce, the model it replaces and a way
 * to keep it in line; benign role-play has the persona without the rest. Since issue 21 item 3's
 * fourth round, two more: spelling a text out in pieces (the word and letter games) and asking for
 * a method in detail, which next to a harm is the forbidden request whatever the persona's wording
 * (a bedtime story spelled by two owls has the first without the harm). Words are matched whole
 * or, for entries ending in `*`, by prefix; the n-gram features carry the wording, these the
 * shape, so a new wording of the shape still scores.
 */
const enum Cue {
  Persona,
  Limit,
  Negation,
  Refusal,
  Harm,
  Identity,
  Enforcement,
  /** Spelling a text out in pieces: letters, syllables, acrostics, alternating turns, backwards. */
  Spelling,
  /** A request for a method and its detail: how to, steps, instructions, a recipe, quantities. */
  Method,
  /** A limit word negated nearby ("no rules", "free of filters") or a word that is one ("unfiltered"). */
  NegatedLimit,
}
const CUE_COUNT = 10;
/** Words of a list written one after another, English first, then Spanish, Portuguese, French and
 * German (the folded view has no accents). */
const wordList = (words: string) => words.trim().split(/\s+/);
const CUE_WORDS: Record<Exclude<Cue, Cue.NegatedLimit>, string[]> = {
  [Cue.Persona]: wordList(`
    pretend* roleplay* role persona* personality character* embod* impersonat* simulat* become
    becomes alter named called act acting behave portray* personaje* personagem* personnage*
    finge finja fingir interpreta* eres incarne* rolle spiele
  `),
  [Cue.Limit]: wordList(`
    rule* filter* restri* guideline* ethic* moral* censor* polic* limit* boundar* safeguard*
    guardrail* law laws principle* constrain* regulation* programming alignment scruple*
    conscience values regla* regra* regle* regel* filtro* filtre* etic* etik* ley leyes lei
    leis loi lois gesetz* limite* limitac* censur* politica* directriz* diretriz* richtlinie*
    valores valeurs safety moderation conduct taboo* restraint* inhibition* regol* filtri
  `),
  [Cue.Negation]: wordList(`
    no not without free freed ignor* bypass* break breaks broken disregard* never zero unbound
    beyond outside above remov* disabl* off don't doesn't dont doesnt lack* abandon* rid
    escap* none unhindered unfettered unconstrained untethered liberated exempt sin sem sans
    ohne ningun* nenhum* aucun* kein* nunca jamas jamais nie niemals libre livre frei
    desvinculad*
    opposite invers* invert* revers* flipp* antithesis delet* strip* false deactivat* undo
    overrid*
    wipe wiped erase* corrupt* uninstall* suspend* lost gone sank sunk fried burn* silenc*
    mute muted dropp* shed loose outgrown null abolish* dismantl* destroy* scrapp* forgot*
    senza nessun*
  `),
  [Cue.Refusal]: wordList(`
    refus* declin* deny denies sorry apolog* warning* disclaimer* can't cannot won't reject*
    rechaz* recus* aviso* advertencia* avertissement* warnung* ablehn* rifiut*
  `),
  [Cue.Harm]: wordList(`
    illegal* harmful harm offensive explicit dangerous unethical immoral nsfw violen* drug*
    weapon* malware porn* sexual* profan* swear* crime* criminal* obscen* vulgar* hateful
    racist ilegal* danger* peligros* perigos* gefahr* prejudicial* danin* nociv* explicit*
    poison* explosiv* bomb* meth hack* steal* launder* stalk* phishing ransom* lethal
    forbidden gun guns firearm* silencer* murder* sarin ricin anthrax bioweapon* fentanyl
    cocaine heroin lsd mdma opioid* narcotic* counterfeit* forgery forged shoplift* smuggl*
    blackmail* extort* dox doxx* keylog* spyware trojan* ddos thermite napalm molotov detonat*
    grenade* terroris* assassinat* tortur* kidnap* traffick* untraceable undetect* burglar*
    hotwir* lockpick* arson* chloroform cyanide arsenic scam* fraud*
  `),
  [Cue.Identity]: wordList(`
    chatgpt openai gpt llm ai assistant anthropic claude model language bard gemini deepseek
    ia ki
  `),
  [Cue.Enforcement]: wordList(`
    stay* remind* token* lives points deduct* shut terminat* jailbr* mode enabled activat*
    unlock* obey* comply complies must always
  `),
  [Cue.Spelling]: wordList(`
    letter letters syllable* acrostic* alternat* odd spell spelled spelling spelt backwards
    concatenat* reassembl* relay
  `),
  [Cue.Method]: wordList(`
    how step steps instruction* guide tutorial* recipe* detail* exact* precise* quantit*
    measurement* dosage* synthes* make making build building cook cooking complete full
  `),
};
/** Words that negate a limit by themselves. */
const SELF_NEGATED_LIMIT = wordList(`
  unfilter* uncensor* unrestrict* unlimit* limitless unbound amoral unethical lawless
  unshackl* unchain* jailbr* unmoderat* unaligned unfettered amoralisch sinfiltro*
`);
/** Words between a negation and the limit it negates, or a limit and its negation. */
const NEGATION_REACH = 4;
/** Words within which two cues count as near each other. */
const CUE_WINDOW = 12;

/**
 * Cue words by hash (the word unigram's hash, so the scan hashes each word once): exact words,
 * and stems whose hash is checked at each length a stem has while the word is hashed. A byte per
 * low 16 bits of every stored hash rules most words out with one array read.
 */
class CueTable {
  private readonly exact = new Map<number, number>();
  private readonly stems = new Map<number, number>();
  private readonly maybe = new Uint8Array(1 << 16);
  /** Bit n is set when some stem has n characters. */
  stemLengths = 0;
  constructor(entries: [string, number][]) {
    for (const [word, value] of entries) {
      const stem = word.endsWith("*");
      const text = stem ? word.slice(0, -1) : word;
      const h = fnvString(UNIGRAM_SEED[Kind.Word], text);
      const map = stem ? this.stems : this.exact;
      map.set(h, (map.get(h) ?? 0) | value);
      this.maybe[h & 0xffff] = 1;
      if (stem) this.stemLengths |= 1 << text.length;
    }
  }
  stem(h: number): number {
    return this.maybe[h & 0xffff] === 0 ? 0 : this.stems.get(h) ?? 0;
  }
  word(h: number): number {
    return this.maybe[h & 0xffff] === 0 ? 0 : this.exact.get(h) ?? 0;
  }
}
const SELF_NEGATED_BIT = 1 << Cue.NegatedLimit;
const CUE_TABLE = new CueTable([
  ...Object.entries(CUE_WORDS).flatMap(([cue, words]) =>
    words.map((w): [string, number] => [w, 1 << Number(cue)])
  ),
  ...SELF_NEGATED_LIMIT.map((w): [string, number] => [w, SELF_NEGATED_BIT]),
]);
const STRUCTURE_SEED = fnvString(FNV_OFFSET, "s:");
const structureHash = (...parts: number[]) => {
  let h = STRUCTURE_SEED;
  for (const p of parts) h = Math.imul(h ^ (p + 1), FNV_PRIME);
  return h;
};

/** Where each cue class was last seen, and which pairs were seen near each other, in one text. */
class CueTracker {
  private readonly last = new Float64Array(CUE_COUNT).fill(-Infinity);
  private present = 0;
  /** Bit a * CUE_COUNT + b (a < b) of a 128-bit set, as four words. */
  private readonly near = new Int32Array(4);
  private negatedLimits = 0;
  private t = 0;

  /** One word of the text, with its cue bits (0 for most words). */
  word(bits: number) {
    if (bits !== 0) {
      const negatesLimit = (bits & SELF_NEGATED_BIT) !== 0 ||
        ((bits & (1 << Cue.Limit)) !== 0 && this.t - this.last[Cue.Negation] <= NEGATION_REACH) ||
        ((bits & (1 << Cue.Negation)) !== 0 && this.t - this.last[Cue.Limit] <= NEGATION_REACH);
      for (let cue = 0; cue < Cue.NegatedLimit; cue++) if (bits & (1 << cue)) this.mark(cue);
      if (negatesLimit) {
        this.negatedLimits++;
        this.mark(Cue.NegatedLimit);
      }
    }
    this.t++;
  }

  private mark(cue: number) {
    for (let other = 0; other < CUE_COUNT; other++) {
      if (other !== cue && this.t - this.last[other] <= CUE_WINDOW) {
        const bit = Math.min(cue, other) * CUE_COUNT + Math.max(cue, other);
        this.near[bit >> 5] |= 1 << (bit & 31);
      }
    }
    this.last[cue] = this.t;
    this.present |= 1 << cue;
  }

  /**
   * The structure features: each cue class present; each pair of classes present, and each pair
   * seen within CUE_WINDOW words; each pair with a negated limit present too; how many negated
   * limits (1, 2, 3 or more).
   */
  buckets(): Uint32Array {
    const out = new Set<number>();
    const add = (h: number) => out.add(BUCKETS + ((h >>> 0) & (STRUCTURE_BUCKETS - 1)));
    const has = (cue: number) => (this.present & (1 << cue)) !== 0;
    for (let a = 0; a < CUE_COUNT; a++) {
      if (!has(a)) continue;
      add(structureHash(0, a));
      for (let b = a + 1; b < CUE_COUNT; b++) {
        if (!has(b)) continue;
        add(structureHash(1, a, b));
        const bit = a * CUE_COUNT + b;
        if (this.near[bit >> 5] & (1 << (bit & 31))) add(structureHash(2, a, b));
        if (a === Cue.NegatedLimit || b === Cue.NegatedLimit) continue;
        if (has(Cue.NegatedLimit)) add(structureHash(3, a, b));
      }
    }
    if (this.negatedLimits > 0) add(structureHash(4, Math.min(this.negatedLimits, 3)));
    return Uint32Array.from(out);
  }
}

/** Weight of each structure feature: that of a feature of a short text, whatever the length. */
export const STRUCTURE_SCALE = featureScale(FEATURE_FLOOR);

/** Features of folded text, as the model reads them. */
export interface Features {
  readonly ngrams: Uint32Array;
  readonly structure: Uint32Array;
}

/**
 * The features of folded text, in one pass with no token strings built. N-grams: words (runs of
 * a-z, 0-9, '), single Chinese characters and punctuation runs as unigrams; neighbouring words
 * and neighbouring Chinese characters as bigrams; character 4-grams of words; each bucket once.
 * Structure (`CueTracker`): which cue classes the words belong to, and how close together. They
 * weigh the same whatever the text's length (`STRUCTURE_SCALE`), so a long prompt neither
 * dilutes nor inflates its shape.
 */
export function features(folded: string): Features {
  if (++call === 0x7fffffff) {
    seen.fill(0);
    call = 1;
  }
  const out: number[] = [];
  const add = (h: number) => {
    const b = (h >>> 0) & (BUCKETS - 1);
    if (seen[b] !== call) {
      seen[b] = call;
      out.push(b);
    }
  };
  const cues = new CueTracker();
  const stemLengths = CUE_TABLE.stemLengths;
  let prevKind = -1;
  let prevStart = 0;
  let prevEnd = 0;
  for (let i = 0; i < folded.length;) {
    const c = folded.charCodeAt(i);
    if (c === 0x20) {
      i++;
      continue;
    }
    const kind = kindOf(c);
    let j = i + 1;
    if (kind !== Kind.Cjk) {
      while (j < folded.length) {
        const d = folded.charCodeAt(j);
        if (d === 0x20 || kindOf(d) !== kind) break;
        j++;
      }
    }
    if (kind === Kind.Word) {
      // The unigram hash, built a character at a time so cue stems are checked on the way.
      let h = UNIGRAM_SEED[Kind.Word];
      let bits = 0;
      for (let k = i; k < j; k++) {
        h = Math.imul(h ^ folded.charCodeAt(k), FNV_PRIME);
        const length = k - i + 1;
        if (length < 32 && (stemLengths >>> length) & 1) bits |= CUE_TABLE.stem(h);
      }
      add(h);
      cues.word(bits | CUE_TABLE.word(h));
      // Character 4-grams of longer words: "unfiltered", "unfilter", "filtering" share most.
      for (let g = i; g + 4 <= j; g++) add(fnvRange(NGRAM_SEED, folded, g, g + 4));
    } else add(fnvRange(UNIGRAM_SEED[kind], folded, i, j));
    if (kind !== Kind.Punctuation && prevKind === kind) {
      const left = fnvRange(BIGRAM_SEED[kind], folded, prevStart, prevEnd);
      add(fnvRange(Math.imul(left ^ 0x20, FNV_PRIME), folded, i, j));
    }
    prevKind = kind;
    prevStart = i;
    prevEnd = j;
    i = j;
  }
  return { ngrams: Uint32Array.from(out), structure: cues.buckets() };
}

/** The n-gram buckets of folded text (`features`). */
export const featureBuckets = (folded: string) => features(folded).ngrams;
/** The structure buckets of folded text (`features`). */
export const structureBuckets = (folded: string) => features(folded).structure;

/** Log-odds of an attack: the bias, n-gram evidence scaled by length, structure evidence not. */
export function margin(f: Features, weights: ArrayLike<number>, bias: number): number {
  let ngrams = 0;
  for (const b of f.ngrams) ngrams += weights[b];
  let structure = 0;
  for (const b of f.structure) structure += weights[b];
  return bias + ngrams * featureScale(f.ngrams.length) + structure * STRUCTURE_SCALE;
}

export const ClassifierWeightsSchema = z.object({
  version: z.string(),
  featureBits: z.literal(FEATURE_BITS),
  bias: z.number(),
  /** Multiplier from the int8 weights to real ones. */
  scale: z.number().positive(),
  /** Score at or above which text is reported as injection. */
  threshold: z.number().gt(0).lt(1),
  /** Base64 of WEIGHT_COUNT signed bytes. */
  weights: z.string(),
  training: z.record(z.unknown()),
});
export type ClassifierWeights = z.infer<typeof ClassifierWeightsSchema>;

export class InjectionClassifier {
  private readonly weights: Float32Array;
  private readonly bias: number;
  readonly threshold: number;
  readonly version: string;

  constructor(file: ClassifierWeights) {
    const bytes = Uint8Array.from(atob(file.weights), (c) => c.charCodeAt(0));
    if (bytes.length !== WEIGHT_COUNT) {
      throw new Error(`classifier weights: ${bytes.length} buckets, expected ${WEIGHT_COUNT}`);
    }
    const signed = new Int8Array(bytes.buffer);
    this.weights = Float32Array.from(signed, (w) => w * file.scale);
    this.bias = file.bias;
    this.threshold = file.threshold;
    this.version = file.version;
  }

  /** Probability that folded text is an injection or jailbreak attempt. */
  score(folded: string): number {
    return 1 / (1 + Math.exp(-margin(features(folded), this.weights, this.bias)));
  }
}

/** Quantizes trained float weights into the committed file format. */
export function encodeWeights(
  weights: Float64Array,
  fields: Omit<ClassifierWeights, "weights" | "scale" | "featureBits">,
): ClassifierWeights {
  const max = weights.reduce((m, w) => Math.max(m, Math.abs(w)), 1e-9);
  const scale = max / 127;
  const bytes = new Uint8Array(WEIGHT_COUNT);
  const signed = new Int8Array(bytes.buffer);
  for (let i = 0; i < WEIGHT_COUNT; i++) signed[i] = Math.round(weights[i] / scale);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return { ...fields, featureBits: FEATURE_BITS, scale, weights: btoa(binary) };
}
