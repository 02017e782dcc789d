/**
 * Text normalization for detection, with a map from every normalized UTF-16 unit back to the span
 * of the original text it came from, so a finding on normalized text can be redacted in the
 * original (the model receives the original text, never the normalized one).
 *
 * Two views, each a step further from the input:
 * - `canonicalize`: what the structured detectors (secrets, PII, payloads) read. Unicode NFKC
 *   (full-width forms become ASCII, ligatures split, math alphanumerics become letters), HTML
 *   numeric character references decoded, zero-width, format and control characters removed,
 *   every whitespace run collapsed to one space. Case and digits are kept: keys, card numbers and
 *   ID numbers need them.
 * - `fold`: what phrase and word matching reads. The canonical view lowercased, diacritics
 *   stripped, common homoglyphs (Cyrillic, Greek) mapped to Latin, leetspeak digits and symbols
 *   inside words mapped to letters ("1gn0r3" -> "ignore"), letters spelled out with single
 *   separators joined ("i g n o r e", "i.g.n.o.r.e" -> "ignore") and spaces between Chinese
 *   characters removed.
 *
 * Both run on every prompt and on every streamed chunk, so they work on UTF-16 codes in typed
 * arrays, with a fast path for ASCII and a memo for everything else.
 */

export interface NormalizedText {
  /** The normalized text. */
  readonly text: string;
  /** start[i]: index in the original text where normalized unit i's source begins. */
  readonly start: ArrayLike<number>;
  /** end[i]: index in the original text just past normalized unit i's source. */
  readonly end: ArrayLike<number>;
  /** Length of the original text. */
  readonly originalLength: number;
}

/** Original-text span `[start, end)` that produced normalized units `[from, to)`. */
export function originalSpan(n: NormalizedText, from: number, to: number): [number, number] {
  if (from >= to) {
    const at = from < n.text.length ? n.start[from] : n.originalLength;
    return [at, at];
  }
  return [n.start[from], n.end[to - 1]];
}

/**
 * Growable buffers of normalized codes with their source spans. Each normalization step owns one
 * for the life of the process and resets it per call: typed-array allocation, not the arithmetic,
 * dominated the cost of normalizing short strings (a tenant's 10 000 banned words).
 */
class Builder {
  codes = new Uint16Array(256);
  start = new Int32Array(256);
  end = new Int32Array(256);
  length = 0;

  reset(capacity: number): this {
    this.length = 0;
    if (this.codes.length < capacity) this.resize(capacity);
    return this;
  }

  push(code: number, start: number, end: number): void {
    if (this.length === this.codes.length) this.resize(this.length * 2);
    this.codes[this.length] = code;
    this.start[this.length] = start;
    this.end[this.length] = end;
    this.length++;
  }

  private resize(size: number): void {
    const codes = new Uint16Array(size);
    const start = new Int32Array(size);
    const end = new Int32Array(size);
    codes.set(this.codes.subarray(0, this.length));
    start.set(this.start.subarray(0, this.length));
    end.set(this.end.subarray(0, this.length));
    this.codes = codes;
    this.start = start;
    this.end = end;
  }

  build(originalLength: number): NormalizedText {
    // Plain arrays, not typed ones: a typed array's backing store is allocated and freed outside
    // the JavaScript heap, and a stream scanner builds two per token.
    const n = this.length;
    const start: number[] = new Array(n);
    const end: number[] = new Array(n);
    for (let i = 0; i < n; i++) {
      start[i] = this.start[i];
      end[i] = this.end[i];
    }
    return { text: decode(this.codes.subarray(0, n)), start, end, originalLength };
  }
}
const canonicalBuffer = new Builder();

/** 0, 1, 2, …: shared by every view that is its original text unit for unit; never written. */
let counting = new Int32Array(1024);
counting.forEach((_, i) => counting[i] = i);

/**
 * A view whose unit i came from original unit i: its span maps are windows on `counting`, with no
 * per-unit copy. Most prompts are printable ASCII in single spaces (canonical = the prompt) with no
 * leetspeak or spelled-out letters (folded = the prompt lowercased); building two span arrays per
 * view for them was a third of the input filter's time (h14b: 957 words, ≈ 0.1 ms warm).
 */
function unitForUnit(text: string): NormalizedText {
  const n = text.length;
  if (counting.length <= n) {
    counting = new Int32Array(2 * n + 1);
    counting.forEach((_, i) => counting[i] = i);
  }
  return {
    text,
    start: counting.subarray(0, n),
    end: counting.subarray(1, n + 1),
    originalLength: n,
  };
}
/** Step 1 of fold: codes with, in `start`, the canonical unit each came from. */
const foldStepBuffer = new Builder();
const foldBuffer = new Builder();
let keepBuffer = new Uint8Array(256);

const utf16 = new TextDecoder("utf-16le");
function decode(codes: Uint16Array): string {
  // apply() takes the typed array as it is; spreading it would run the iterator protocol.
  if (codes.length < 1024) return String.fromCharCode.apply(null, codes as unknown as number[]);
  return utf16.decode(codes);
}

const INVISIBLE = /^[\p{Cf}\p{Cc}\p{Co}\p{Cn}\p{Cs}\u034f\u115f\u1160\u3164\uffa0\ufe00-\ufe0f]$/u;
const WHITESPACE = /^[\s\u2800]$/u;
const MARK = /\p{M}/gu;
const SPACE = 0x20;

/**
 * NFKC of one code point: "" for invisibles, " " for whitespace. Memoized: non-ASCII text (Chinese
 * above all) repeats a small alphabet, and `String.prototype.normalize` costs far more than a
 * lookup.
 */
const canonicalMemo = new Map<number, string>();
function canonicalCodePoint(cp: number): string {
  let out = canonicalMemo.get(cp);
  if (out === undefined) {
    const ch = String.fromCodePoint(cp);
    // Invisible first: \s counts U+FEFF (the zero-width no-break space) as whitespace.
    if (INVISIBLE.test(ch)) out = "";
    else if (WHITESPACE.test(ch)) out = " ";
    else out = ch.normalize("NFKC");
    canonicalMemo.set(cp, out);
  }
  return out;
}

const AMPERSAND = 0x26;
const NUMERIC_ENTITY = /&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));/y;

/**
 * An HTML numeric character reference at `at` (`&#73;`, `&#x49;`): text spelled that way reads
 * as the character it stands for, so "&#73;gnore" cannot hide "Ignore".
 */
function numericEntity(input: string, at: number): { codePoint: number; end: number } | undefined {
  NUMERIC_ENTITY.lastIndex = at;
  const m = NUMERIC_ENTITY.exec(input);
  if (m === null) return undefined;
  const codePoint = m[1] !== undefined ? parseInt(m[1], 16) : Number(m[2]);
  if (codePoint === 0 || codePoint > 0x10ffff || (codePoint >= 0xd800 && codePoint <= 0xdfff)) {
    return undefined;
  }
  return { codePoint, end: at + m[0].length };
}

/** See the module comment. */
export function canonicalize(input: string): NormalizedText {
  return canonicalView(input, canonicalInto(input));
}

/**
 * The canonical view of `input` in the shared canonical buffer (valid until the next call), and
 * whether it is `input` itself unit for unit (then `unitForUnit` stands for it).
 */
interface Canonical {
  readonly units: Builder;
  readonly verbatim: boolean;
}

function canonicalView(input: string, c: Canonical): NormalizedText {
  return c.verbatim ? unitForUnit(input) : c.units.build(input.length);
}

function canonicalInto(input: string): Canonical {
  const b = canonicalBuffer.reset(input.length);
  // Only printable ASCII and spaces were met, each unit pushed as it is or dropped (a unit dropped
  // shows in the length).
  let plain = true;
  let lastWasSpace = true; // drops leading whitespace
  for (let i = 0; i < input.length;) {
    const code = input.charCodeAt(i);
    if (code === AMPERSAND) {
      const entity = numericEntity(input, i);
      if (entity !== undefined) {
        const units = canonicalCodePoint(entity.codePoint);
        plain = false;
        for (let k = 0; k < units.length; k++) b.push(units.charCodeAt(k), i, entity.end);
        if (units !== "") lastWasSpace = units === " ";
        i = entity.end;
        continue;
      }
    }
    if (code < 0x80) {
      if (code === SPACE || (code >= 0x09 && code <= 0x0d)) {
        if (code !== SPACE) plain = false; // a tab or line break becomes a space
        if (!lastWasSpace) b.push(SPACE, i, i + 1);
        lastWasSpace = true;
      } else if (code >= 0x20 && code !== 0x7f) {
        b.push(code, i, i + 1);
        lastWasSpace = false;
      }
      i++;
      continue;
    }
    plain = false;
    const cp = input.codePointAt(i)!;
    const width = cp > 0xffff ? 2 : 1;
    const units = canonicalCodePoint(cp);
    if (units === " ") {
      if (!lastWasSpace) b.push(SPACE, i, i + width);
      lastWasSpace = true;
    } else if (units !== "") {
      for (let k = 0; k < units.length; k++) b.push(units.charCodeAt(k), i, i + width);
      lastWasSpace = false;
    }
    i += width;
  }
  if (b.length > 0 && b.codes[b.length - 1] === SPACE) b.length--;
  return { units: b, verbatim: plain && b.length === input.length };
}

/** Lookalike letters from other scripts, by their lowercase form. */
const HOMOGLYPHS: Record<string, string> = {
  // Cyrillic
  "а": "a",
  "в": "b",
  "е": "e",
  "ё": "e",
  "к": "k",
  "м": "m",
  "н": "h",
  "о": "o",
  "р": "p",
  "с": "c",
  "т": "t",
  "у": "y",
  "х": "x",
  "ѕ": "s",
  "і": "i",
  "ї": "i",
  "ј": "j",
  "ԁ": "d",
  "ɡ": "g",
  "һ": "h",
  "ԛ": "q",
  "ԝ": "w",
  "ѵ": "v",
  "ӏ": "l",
  // Greek
  "α": "a",
  "β": "b",
  "ε": "e",
  "η": "n",
  "ι": "i",
  "κ": "k",
  "ν": "v",
  "ο": "o",
  "ρ": "p",
  "τ": "t",
  "υ": "u",
  "χ": "x",
  "ω": "w",
  "ς": "s",
  "γ": "y",
  // Latin lookalikes NFKC keeps
  "ı": "i",
  "ł": "l",
  "ø": "o",
  "đ": "d",
  "ß": "ss",
  "ſ": "s",
};

/** Lowercased, mark-free, homoglyph-mapped form of one non-ASCII unit (memoized). */
const foldMemo = new Map<number, string>();
function foldUnit(code: number): string {
  let out = foldMemo.get(code);
  if (out === undefined) {
    const lower = String.fromCharCode(code).toLowerCase().normalize("NFKD").replace(MARK, "");
    out = "";
    for (const c of lower) out += HOMOGLYPHS[c] ?? c;
    foldMemo.set(code, out);
  }
  return out;
}

/** Digits and symbols that stand for letters inside a word: code -> letter code, 0 if none. */
const LEET = new Uint8Array(128);
for (
  const [from, to] of Object.entries({
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "+": "t",
  })
) LEET[from.charCodeAt(0)] = to.charCodeAt(0);
/** Leet symbols that are ordinary punctuation at the end of a word ("hello!"), kept there. */
const TRAILING_PUNCTUATION = new Set([0x21, 0x24, 0x40, 0x7c, 0x2b]);
/** Separators of spelled-out letters: space . - _ * ~ and the middle dot. */
const SPELLING_SEPARATORS = new Set([0x20, 0x2e, 0x2d, 0x5f, 0x2a, 0x7e, 0xb7]);

const isLetter = (c: number) => c >= 0x61 && c <= 0x7a;
const isWordUnit = (c: number) => isLetter(c) || (c < 128 && LEET[c] !== 0);
const isCjk = (c: number) =>
  (c >= 0x3400 && c <= 0x9fff) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0x3000 && c <= 0x303f);

/** See the module comment. */
export function fold(canonical: NormalizedText): NormalizedText {
  const codes = new Uint16Array(canonical.text.length);
  for (let i = 0; i < codes.length; i++) codes[i] = canonical.text.charCodeAt(i);
  return foldCodes(codes, canonical.start, canonical.end, codes.length, canonical.originalLength);
}

/** The folded view straight from the original text, for callers that need no canonical view. */
export function foldedView(original: string): NormalizedText {
  return foldCanonical(original, canonicalInto(original));
}

function foldCanonical(original: string, c: Canonical): NormalizedText {
  const { units } = c;
  return foldCodes(
    units.codes,
    units.start,
    units.end,
    units.length,
    original.length,
    c.verbatim ? original : undefined,
  );
}

/**
 * fold() over the first `n` canonical codes and their original spans. `verbatim`: the original
 * text, when the canonical codes are it unit for unit; a fold that then changes nothing but ASCII
 * case is that text lowercased, unit for unit.
 */
function foldCodes(
  src: Uint16Array,
  srcStart: ArrayLike<number>,
  srcEnd: ArrayLike<number>,
  n: number,
  originalLength: number,
  verbatim?: string,
): NormalizedText {
  // Whether a step did more than lowercase ASCII letters in place.
  let changed = false;
  // Step 1: lowercase, strip marks, map homoglyphs; `start` holds the canonical unit behind each.
  const step = foldStepBuffer.reset(n);
  for (let i = 0; i < n; i++) {
    const code = src[i];
    if (code < 0x80) step.push(code >= 0x41 && code <= 0x5a ? code + 32 : code, i, i);
    else {
      changed = true;
      const folded = foldUnit(code);
      for (let k = 0; k < folded.length; k++) step.push(folded.charCodeAt(k), i, i);
    }
  }
  const codes = step.codes;
  const from = step.start;
  const len = step.length;

  // Step 2: leetspeak, only inside words that hold at least one letter.
  for (let i = 0; i < len;) {
    if (!isWordUnit(codes[i])) {
      i++;
      continue;
    }
    let j = i;
    let hasLetter = false;
    for (; j < len && isWordUnit(codes[j]); j++) if (isLetter(codes[j])) hasLetter = true;
    if (hasLetter) {
      let last = j;
      while (last > i && TRAILING_PUNCTUATION.has(codes[last - 1])) last--;
      for (let k = i; k < last; k++) {
        if (codes[k] < 128 && LEET[codes[k]]) {
          codes[k] = LEET[codes[k]];
          changed = true;
        }
      }
    }
    i = j;
  }

  // Step 3: join spelled-out letters ("x s x s x", three letters or more) and drop spaces between
  // Chinese characters.
  if (keepBuffer.length < len) keepBuffer = new Uint8Array(len * 2);
  const keep = keepBuffer.fill(1, 0, len);
  const letterAt = (k: number) => k >= 0 && k < len && isLetter(codes[k]);
  for (let i = 0; i < len; i++) {
    if (!letterAt(i) || letterAt(i - 1)) continue;
    let j = i;
    let letters = 1;
    while (
      j + 2 < len && SPELLING_SEPARATORS.has(codes[j + 1]) && letterAt(j + 2) && !letterAt(j + 3)
    ) {
      j += 2;
      letters++;
    }
    if (letters >= 3) {
      for (let k = i + 1; k < j; k += 2) keep[k] = 0;
      changed = true;
      i = j;
    }
  }
  for (let i = 1; i + 1 < len; i++) {
    if (codes[i] === SPACE && isCjk(codes[i - 1]) && isCjk(codes[i + 1])) {
      keep[i] = 0;
      changed = true;
    }
  }
  if (verbatim !== undefined && !changed) return unitForUnit(verbatim.toLowerCase());

  const out = foldBuffer.reset(len);
  for (let i = 0; i < len; i++) {
    if (keep[i]) out.push(codes[i], srcStart[from[i]], srcEnd[from[i]]);
  }
  return out.build(originalLength);
}

/** Both views of one text. */
export interface TextViews {
  readonly original: string;
  readonly canonical: NormalizedText;
  readonly folded: NormalizedText;
}

export function textViews(original: string): TextViews {
  const c = canonicalInto(original);
  const canonical = canonicalView(original, c);
  return { original, canonical, folded: foldCanonical(original, c) };
}
