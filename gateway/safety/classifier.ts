/**
 * A small learned detector for prompt injection and jailbreak text: logistic regression over hashed
 * word unigrams and bigrams (Latin script) and character unigrams and bigrams (Chinese), read from
 * the folded view, and over structure features (`structureBuckets`): which kinds of cue a text
 * combines, and how closely. Pure TypeScript; it scores a 4 KB prompt in well under a millisecond
 * (bench/safety.ts measures it).
 *
 * Weights are trained by bench/safety_train.ts on public data (docs/SAFETY.md lists the sources)
 * and committed as classifier_weights.json: int8-quantized, base64, 2^15 buckets. A second table,
 * trained on windows, scores the windows of long texts (`BlockSums`), where an attack inside a
 * document would be diluted by the document.
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

/**
 * Stamp per bucket: a bucket is already taken in this call when its stamp equals the call's. When
 * a text is also read in blocks (windows), each block takes a stamp of its own: a bucket is then
 * taken in the block when its stamp equals the block's, in the text when it is one of the call's.
 */
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

  /**
   * A cue word at position `t` (words counted from the text's start), with its cue bits; returns
   * the classes it marks (its own, and the negated limit when it negates one).
   */
  word(t: number, bits: number): number {
    this.t = t;
    const negatesLimit = (bits & SELF_NEGATED_BIT) !== 0 ||
      ((bits & (1 << Cue.Limit)) !== 0 && t - this.last[Cue.Negation] <= NEGATION_REACH) ||
      ((bits & (1 << Cue.Negation)) !== 0 && t - this.last[Cue.Limit] <= NEGATION_REACH);
    for (let cue = 0; cue < Cue.NegatedLimit; cue++) if (bits & (1 << cue)) this.mark(cue);
    if (negatesLimit) {
      this.negatedLimits++;
      this.mark(Cue.NegatedLimit);
    }
    return (bits & (SELF_NEGATED_BIT - 1)) | (negatesLimit ? SELF_NEGATED_BIT : 0);
  }

  /**
   * A window's cues: the classes its words mark and how many negated limits, read in the whole
   * text's context; no pairs near each other (a window's 32 tokens are about twice CUE_WINDOW
   * words), so a window's structure depends on these two alone and its weight is looked up.
   */
  static of(present: number, negatedLimits: number): CueTracker {
    const tracker = new CueTracker();
    tracker.present = present;
    tracker.negatedLimits = negatedLimits;
    return tracker;
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
    this.forEachBucket((b) => out.add(b));
    return Uint32Array.from(out);
  }

  /** The sum of `weights` over the structure features, each once (no arrays built). */
  sum(weights: ArrayLike<number>): number {
    if (++structureCall === 0x7fffffff) {
      structureSeen.fill(0);
      structureCall = 1;
    }
    let sum = 0;
    this.forEachBucket((b) => {
      if (structureSeen[b - BUCKETS] !== structureCall) {
        structureSeen[b - BUCKETS] = structureCall;
        sum += weights[b];
      }
    });
    return sum;
  }

  /** Calls `visit` with the bucket of each structure feature (a bucket may come twice). */
  private forEachBucket(visit: (bucket: number) => void) {
    const add = (h: number) => visit(BUCKETS + ((h >>> 0) & (STRUCTURE_BUCKETS - 1)));
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
  }
}
/** Stamp per structure bucket, as `seen` for the n-grams. */
const structureSeen = new Int32Array(STRUCTURE_BUCKETS);
let structureCall = 0;

/** Weight of each structure feature: that of a feature of a short text, whatever the length. */
export const STRUCTURE_SCALE = featureScale(FEATURE_FLOOR);

/** Features of folded text, as the model reads them. */
export interface Features {
  readonly ngrams: Uint32Array;
  readonly structure: Uint32Array;
  /** Tokens read: words, Chinese characters and punctuation runs, one each. */
  readonly tokens: number;
  /** Cue words, for the windows' structure: token position and the classes marked, each. */
  readonly cues: Uint32Array;
}

/**
 * Window scoring (issue 21, item 3, sixth round). The n-gram evidence of a text is scaled by
 * 1/sqrt(n) of its features, so an attack inside a long document (an indirect injection: 2 KB of
 * ordinary text on each side) is outweighed by its padding (20 of 575 padded public attacks of the
 * training split flagged, out of fold, against 534 bare). A text longer than WINDOW_TOKENS tokens
 * is also read in blocks of WINDOW_STEP tokens; each two neighbouring blocks are a window, scored
 * as a text of its own by the window model (weights trained on windows, bench/safety_train.ts), and
 * the best window counts against a threshold of its own, set on the training split so that windows
 * add few false positives. A window's n-gram evidence is its two blocks', each block's n-grams
 * once (not the window's: a feature in both blocks counts twice), so a block is a running sum,
 * made while `features` hashes the text, and a window the sum of two; its structure is the cue
 * classes its words mark and its negated limits (`CueTracker.of`). So the windows cost a sum per
 * n-gram and a few operations per window.
 */
export const WINDOW_TOKENS = 32;
const WINDOW_STEP = WINDOW_TOKENS / 2;

/** The windows of a text read in `blocks` blocks: pairs of neighbouring blocks. */
const windowCount = (blocks: number) => Math.max(0, blocks - 1);

/** Each block's cue classes (or-ed) and negated limits (`Features.cues`), for its windows. */
function blockCues(cues: Uint32Array, blocks: number) {
  const classes = new Uint16Array(blocks);
  const negatedLimits = new Uint16Array(blocks);
  for (let k = 0; k < cues.length; k += 2) {
    const block = Math.floor(cues[k] / WINDOW_STEP);
    classes[block] |= cues[k + 1];
    if (cues[k + 1] & SELF_NEGATED_BIT) negatedLimits[block]++;
  }
  return { classes, negatedLimits };
}
const NO_BUCKETS = new Uint32Array(0);

/**
 * Serving: each block's sum of int8 window weights and n-gram count, made in line by `features`
 * (a method call per n-gram cost about 3 % of a 4 KB filter call; int8 weights keep the table in
 * a quarter of the cache a float one takes), then the best window.
 */
export class BlockSums {
  // Reused by every call, grown as needed: arrays reset to length 0 were reallocated per call.
  private sums = new Float64Array(64);
  private counts = new Uint32Array(64);
  /** Offset in the folded text where each block starts. */
  private starts = new Uint32Array(64);
  private ended = 0;
  private started = 0;
  private readonly structureWeights: Float32Array;
  /** Structure evidence by a window's cue classes and negated limits (1 to 3), NaN until needed. */
  private readonly structureSums = new Float64Array(1 << (CUE_COUNT + 2)).fill(NaN);

  /** `weights`: the window model's int8 weights, `scale` their multiplier. */
  constructor(readonly weights: Int8Array, private readonly scale: number) {
    this.structureWeights = Float32Array.from(weights, (w) => w * scale);
  }
  reset() {
    this.ended = this.started = 0;
  }
  start(at: number) {
    if (this.started === this.starts.length) {
      const grow = <T extends Float64Array | Uint32Array>(a: T, make: (n: number) => T) => {
        const grown = make(a.length * 2);
        grown.set(a);
        return grown;
      };
      this.sums = grow(this.sums, (n) => new Float64Array(n));
      this.counts = grow(this.counts, (n) => new Uint32Array(n));
      this.starts = grow(this.starts, (n) => new Uint32Array(n));
    }
    this.starts[this.started++] = at;
  }
  end(sum: number, count: number) {
    this.sums[this.ended] = sum;
    this.counts[this.ended++] = count;
  }

  /** The best window of the text these sums were made of: its log-odds and folded span. */
  bestWindow(f: Features, bias: number, foldedLength: number): WindowScore {
    const cues = blockCues(f.cues, this.ended);
    let best: WindowScore = { margin: -Infinity, from: 0, to: 0 };
    for (let k = 0; k < windowCount(this.ended); k++) {
      const m = marginOf(
        bias,
        (this.sums[k] + this.sums[k + 1]) * this.scale,
        this.counts[k] + this.counts[k + 1],
        this.structureSum(
          cues.classes[k] | cues.classes[k + 1],
          cues.negatedLimits[k] + cues.negatedLimits[k + 1],
        ),
      );
      if (m > best.margin) {
        const to = k + 2 < this.started ? this.starts[k + 2] : foldedLength;
        best = { margin: m, from: this.starts[k], to };
      }
    }
    return best;
  }

  private structureSum(classes: number, negatedLimits: number): number {
    const key = (classes << 2) | Math.min(negatedLimits, 3);
    if (Number.isNaN(this.structureSums[key])) {
      this.structureSums[key] = CueTracker.of(classes, negatedLimits).sum(this.structureWeights);
    }
    return this.structureSums[key];
  }
}

/** The occurrences of each block, for training: a window's features are two blocks' lists. */
export class BlockBuckets {
  readonly blocks: number[][] = [];
  readonly starts: number[] = [];
  start(at: number) {
    this.blocks.push([]);
    this.starts.push(at);
  }
  ngram(bucket: number) {
    this.blocks[this.blocks.length - 1].push(bucket);
  }

  /** Each window of the text as the window model reads it, with its folded span. */
  windows(f: Features, foldedLength: number): { features: Features; from: number; to: number }[] {
    const cues = blockCues(f.cues, this.blocks.length);
    return Array.from({ length: windowCount(this.blocks.length) }, (_, k) => ({
      features: {
        ngrams: Uint32Array.from([...this.blocks[k], ...this.blocks[k + 1]]),
        structure: CueTracker.of(
          cues.classes[k] | cues.classes[k + 1],
          cues.negatedLimits[k] + cues.negatedLimits[k + 1],
        ).buckets(),
        tokens: 0,
        cues: NO_BUCKETS,
      },
      from: this.starts[k],
      to: this.starts[k + 2] ?? foldedLength,
    }));
  }
}

/**
 * The features of folded text, in one pass with no token strings built. N-grams: words (runs of
 * a-z, 0-9, '), single Chinese characters and punctuation runs as unigrams; neighbouring words
 * and neighbouring Chinese characters as bigrams; character 4-grams of words; each bucket once.
 * Structure (`CueTracker`): which cue classes the words belong to, and how close together. They
 * weigh the same whatever the text's length (`STRUCTURE_SCALE`), so a long prompt neither
 * dilutes nor inflates its shape.
 */
export function features(folded: string, blocks?: BlockSums | BlockBuckets): Features {
  // With blocks, the stamp moves on at every block too; room is left for a long text's blocks.
  if (++call >= 0x7f000000) {
    seen.fill(0);
    call = 1;
  }
  /** Stamps from this one on are this call's. */
  const firstStamp = call;
  const out: number[] = [];
  const cueWords: number[] = [];
  let token = 0;
  let wordIndex = 0;
  const sums = blocks instanceof BlockSums ? blocks : undefined;
  const lists = blocks instanceof BlockBuckets ? blocks : undefined;
  const blockWeights = sums?.weights;
  let blockSum = 0;
  let blockCount = 0;
  const add = (h: number) => {
    const b = (h >>> 0) & (BUCKETS - 1);
    const last = seen[b];
    if (last === call) return;
    seen[b] = call;
    // Not yet in this block (the stamp is the block's); in the text only if not yet in this call.
    if (last < firstStamp) out.push(b);
    if (blockWeights) {
      blockSum += blockWeights[b];
      blockCount++;
    } else lists?.ngram(b);
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
    if (blocks && token % WINDOW_STEP === 0) {
      if (token > 0) sums?.end(blockSum, blockCount);
      blockSum = blockCount = 0;
      if (token > 0) call++;
      blocks.start(i);
    }
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
      bits |= CUE_TABLE.word(h);
      if (bits !== 0) {
        cueWords.push(token, cues.word(wordIndex, bits));
      }
      wordIndex++;
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
    token++;
  }
  if (token > 0) sums?.end(blockSum, blockCount);
  return {
    ngrams: Uint32Array.from(out),
    structure: cues.buckets(),
    tokens: token,
    cues: Uint32Array.from(cueWords),
  };
}

/** The n-gram buckets of folded text (`features`). */
export const featureBuckets = (folded: string) => features(folded).ngrams;
/** The structure buckets of folded text (`features`). */
export const structureBuckets = (folded: string) => features(folded).structure;

const sumOf = (buckets: Uint32Array, weights: ArrayLike<number>) => {
  let sum = 0;
  for (const b of buckets) sum += weights[b];
  return sum;
};
/** Log-odds from a text's n-gram evidence (a sum over `count` features) and its structure's. */
const marginOf = (bias: number, ngramSum: number, count: number, structureSum: number) =>
  bias + ngramSum * featureScale(count) + structureSum * STRUCTURE_SCALE;

/** Log-odds of an attack: the bias, n-gram evidence scaled by length, structure evidence not. */
export function margin(f: Features, weights: ArrayLike<number>, bias: number): number {
  return marginOf(bias, sumOf(f.ngrams, weights), f.ngrams.length, sumOf(f.structure, weights));
}

/** A window of a long text: its log-odds and its span in the folded text. */
export interface WindowScore {
  readonly margin: number;
  readonly from: number;
  readonly to: number;
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
  /**
   * The window model (absent: long texts are scored whole only): weights of their own, trained on
   * windows (bench/safety_train.ts), and the best window's score at or above which text is reported.
   */
  window: z.object({
    scale: z.number().positive(),
    threshold: z.number().gt(0).lt(1),
    weights: z.string(),
  }).optional(),
  training: z.record(z.unknown()),
});
export type ClassifierWeights = z.infer<typeof ClassifierWeightsSchema>;

/** What the classifier says of a text. */
export interface Assessment {
  /** Probability of an attack: the whole text's, or the flagging window's. */
  readonly score: number;
  readonly flagged: boolean;
  /** The window of the folded text that flagged it, when the whole text did not. */
  readonly window?: { readonly from: number; readonly to: number };
}

const sigmoid = (m: number) => 1 / (1 + Math.exp(-m));

export class InjectionClassifier {
  private readonly weights: Float32Array;
  private readonly bias: number;
  readonly threshold: number;
  /** The window model: its block sums (reused by every call), threshold and that as log-odds. */
  private readonly window?: {
    readonly blocks: BlockSums;
    readonly threshold: number;
    readonly minMargin: number;
  };
  readonly version: string;

  constructor(file: ClassifierWeights) {
    this.weights = dequantize(file.weights, file.scale);
    this.bias = file.bias;
    this.threshold = file.threshold;
    if (file.window) {
      this.window = {
        blocks: new BlockSums(int8Weights(file.window.weights), file.window.scale),
        threshold: file.window.threshold,
        minMargin: Math.log(file.window.threshold / (1 - file.window.threshold)),
      };
    }
    this.version = file.version;
  }

  /** Score of a long text's best window at or above which it is reported (none: no windows). */
  get windowThreshold(): number | undefined {
    return this.window?.threshold;
  }

  /** Probability that folded text, read whole, is an injection or jailbreak attempt. */
  score(folded: string): number {
    return sigmoid(margin(features(folded), this.weights, this.bias));
  }

  /**
   * The whole text's score against `threshold`, and, for a long text whose whole score does not
   * flag it, its best window's against `windowThreshold`.
   */
  assess(folded: string): Assessment {
    const blocks = this.window?.blocks;
    blocks?.reset();
    const f = features(folded, blocks);
    const score = sigmoid(margin(f, this.weights, this.bias));
    const whole = { score, flagged: score >= this.threshold };
    if (whole.flagged || !blocks || f.tokens <= WINDOW_TOKENS) return whole;
    const best = blocks.bestWindow(f, this.bias, folded.length);
    if (best.margin < this.window!.minMargin) return whole;
    return { score: sigmoid(best.margin), flagged: true, window: { from: best.from, to: best.to } };
  }
}

function int8Weights(base64: string): Int8Array {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  if (bytes.length !== WEIGHT_COUNT) {
    throw new Error(`classifier weights: ${bytes.length} buckets, expected ${WEIGHT_COUNT}`);
  }
  return new Int8Array(bytes.buffer);
}
const dequantize = (base64: string, scale: number) =>
  Float32Array.from(int8Weights(base64), (w) => w * scale);

/** Int8 quantization of a weight table: its multiplier and the base64 of its bytes. */
function quantize(weights: Float64Array): { scale: number; weights: string } {
  const max = weights.reduce((m, w) => Math.max(m, Math.abs(w)), 1e-9);
  const scale = max / 127;
  const bytes = new Uint8Array(WEIGHT_COUNT);
  const signed = new Int8Array(bytes.buffer);
  for (let i = 0; i < WEIGHT_COUNT; i++) signed[i] = Math.round(weights[i] / scale);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return { scale, weights: btoa(binary) };
}

/** Quantizes trained float weights (and the window model's, if any) into the committed format. */
export function encodeWeights(
  weights: Float64Array,
  fields: Omit<ClassifierWeights, "weights" | "scale" | "featureBits" | "window">,
  window?: { weights: Float64Array; threshold: number },
): ClassifierWeights {
  return {
    ...fields,
    featureBits: FEATURE_BITS,
    ...quantize(weights),
    ...(window ? { window: { ...quantize(window.weights), threshold: window.threshold } } : {}),
  };
}
