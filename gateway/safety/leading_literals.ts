/**
 * The literal texts every match of a regular expression must start with, read off its source.
 *
 * Most detection rules open with a word list (`\b(?:ignore|disregard|...)\b...`). Run with the `g`
 * flag, V8 tries such an expression at every position of the text, and thirty-odd rules over a
 * 4 KB prompt cost more than everything else in the filter. Knowing the opening literals, one
 * Aho-Corasick pass finds the few positions where a match can begin and the expression is tried
 * there alone (see rules.ts): the same matches, a fraction of the work.
 *
 * The analysis is deliberately small: it understands alternation, non-capturing groups, zero-width
 * openers (`\b`, `^`, lookarounds), escaped punctuation, small character classes of literal
 * characters and the quantifiers that make an atom optional. Anything else ends a literal, and a
 * branch with no literal at its start makes the whole expression unanchored (`undefined`): the
 * caller then scans the text as before. Never a wrong answer, at worst no speed-up.
 */

/** Where the group opened at `open` (an index of "(") closes. */
function closingParen(src: string, open: number): number {
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    const c = src[i];
    if (c === "\\") i++;
    else if (c === "[") i = closingBracket(src, i);
    else if (c === "(") depth++;
    else if (c === ")" && --depth === 0) return i;
  }
  throw new Error(`unbalanced group in ${src}`);
}

/** Where the character class opened at `open` (an index of "[") closes. */
function closingBracket(src: string, open: number): number {
  for (let i = open + 1; i < src.length; i++) {
    if (src[i] === "\\") i++;
    else if (src[i] === "]") return i;
  }
  throw new Error(`unbalanced class in ${src}`);
}

/** `src` split at its top-level `|`. */
function branches(src: string): string[] {
  const out: string[] = [];
  let from = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === "\\") i++;
    else if (c === "[") i = closingBracket(src, i);
    else if (c === "(") i = closingParen(src, i);
    else if (c === "|") {
      out.push(src.slice(from, i));
      from = i + 1;
    }
  }
  out.push(src.slice(from));
  return out;
}

/** Whether the atom ending before `at` may be absent (`?`, `*`, `{0,...}`). */
function optionalAt(src: string, at: number): boolean {
  return src[at] === "?" || src[at] === "*" || src.startsWith("{0", at);
}
/** Whether a quantifier follows at `at` (after which the text no longer reads literally). */
function quantifiedAt(src: string, at: number): boolean {
  return src[at] === "?" || src[at] === "*" || src[at] === "+" || src[at] === "{";
}

/** Escapes that stand for the character itself: punctuation, never a letter or digit class. */
const LITERAL_ESCAPE = /^[^A-Za-z0-9]$/u;

/** The characters of a class of literal characters only (`[;'"]`); undefined for anything else. */
function classCharacters(body: string): string[] | undefined {
  if (body.startsWith("^")) return undefined;
  const chars: string[] = [];
  for (let i = 0; i < body.length;) {
    let ch = String.fromCodePoint(body.codePointAt(i)!);
    i += ch.length;
    if (ch === "\\") {
      ch = String.fromCodePoint(body.codePointAt(i)!);
      if (!LITERAL_ESCAPE.test(ch)) return undefined;
      i += ch.length;
    } else if (ch === "-" && chars.length > 0 && i < body.length) return undefined; // a range
    chars.push(ch);
  }
  return chars.length > 0 ? chars : undefined;
}

/** The literal prefixes of one branch (no top-level `|`); undefined when it has none. */
function branchLiterals(src: string): string[] | undefined {
  let i = 0;
  // Zero-width openers say nothing about the first character.
  for (;;) {
    if (src.startsWith("\\b", i)) i += 2;
    else if (src[i] === "^") i += 1;
    else if (/^\(\?<?[=!]/.test(src.slice(i, i + 4))) i = closingParen(src, i) + 1;
    else break;
  }
  if (src.startsWith("(?:", i) || (src[i] === "(" && src[i + 1] !== "?")) {
    const close = closingParen(src, i);
    if (optionalAt(src, close + 1)) return undefined;
    return leadingLiterals(src.slice(src[i + 1] === "?" ? i + 3 : i + 1, close));
  }
  if (src[i] === "[") {
    const close = closingBracket(src, i);
    if (optionalAt(src, close + 1)) return undefined;
    return classCharacters(src.slice(i + 1, close));
  }
  let literal = "";
  while (i < src.length) {
    let ch = String.fromCodePoint(src.codePointAt(i)!);
    let next = i + ch.length;
    if (ch === "\\") {
      ch = String.fromCodePoint(src.codePointAt(next)!);
      if (!LITERAL_ESCAPE.test(ch)) break;
      next += ch.length;
    } else if (".[](){}|^$*+?".includes(ch)) break;
    if (optionalAt(src, next)) break;
    literal += ch;
    if (quantifiedAt(src, next)) break;
    i = next;
  }
  return literal.length > 0 ? [literal] : undefined;
}

/**
 * Literal texts such that every match of `pattern` begins with one of them, or `undefined` when
 * the analysis cannot tell (see the module comment).
 */
export function leadingLiterals(pattern: string): string[] | undefined {
  const out: string[] = [];
  for (const branch of branches(pattern)) {
    const literals = branchLiterals(branch);
    if (literals === undefined) return undefined;
    out.push(...literals);
  }
  return out;
}
