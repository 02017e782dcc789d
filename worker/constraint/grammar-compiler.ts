/**
 * Turns an output constraint into a compiled xgrammar grammar for gpt-oss's vocabulary.
 *
 * The vocabulary is handed to xgrammar once per worker (`GrammarCompiler.create`): every
 * o200k_harmony token as its bytes in byte-level form (GPT-2's byte-to-character map, what
 * xgrammar's "byte_level" decoding expects). Harmony's special tokens are given as empty strings,
 * which xgrammar treats as special: no grammar can produce them, so `<|end|>` or `<|call|>` never
 * appears inside a constrained answer. `<|return|>` is the one stop token: a grammar allows it
 * exactly when the answer is complete, which ends the request (`<|call|>` instead for the arguments
 * of a forced call).
 *
 * Compiled grammars are kept by constraint (bounded, least recently used dropped first): the first
 * request with a schema pays for its compile, later ones look it up.
 */
import { type HarmonyTokenizer, FIRST_SPECIAL_ID, SPECIAL_TOKENS, VOCAB_SIZE } from "../../shared/tokenizer.ts";
import type { OutputConstraint } from "../../shared/protocol.ts";
import { loadXGrammar, xgrammarCall, type XGrammarModule } from "../../shared/xgrammar.ts";
import { schemaGrammar } from "../../shared/json-schema-grammar.ts";
import type { CompiledGrammar, GrammarCompiler as XGrammarCompiler, GrammarMatcher } from "@mlc-ai/web-xgrammar";

/** The token that ends a constrained answer: the grammar allows it once the value is complete. */
export const CONSTRAINED_STOP_TOKEN = SPECIAL_TOKENS["<|return|>"];
/** The token that ends constrained call arguments (a forced strict tool call). */
export const CONSTRAINED_CALL_END = SPECIAL_TOKENS["<|call|>"];

/** GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest map above U+0100. */
function byteLevelAlphabet(): string[] {
  const alphabet = new Array<string>(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    alphabet[b] = String.fromCodePoint(printable ? b : 256 + shifted++);
  }
  return alphabet;
}

/** Every token of the vocabulary in xgrammar's byte-level form; special tokens empty. */
export function byteLevelVocabulary(tokenizer: HarmonyTokenizer): string[] {
  const alphabet = byteLevelAlphabet();
  const vocab = new Array<string>(VOCAB_SIZE);
  for (let id = 0; id < VOCAB_SIZE; id++) {
    if (id >= FIRST_SPECIAL_ID) {
      vocab[id] = "";
      continue;
    }
    let text = "";
    for (const byte of tokenizer.tokenBytes(id)) text += alphabet[byte];
    vocab[id] = text;
  }
  return vocab;
}

/** The schema text a constraint compiles: json_object is any object, properties unconstrained. */
function schemaOf(constraint: OutputConstraint): { schema: string; strict: boolean } {
  return constraint.kind === "json_object"
    ? { schema: '{"type":"object"}', strict: false }
    : { schema: constraint.schema, strict: true };
}

export interface MatcherResult {
  matcher: GrammarMatcher;
  /** Milliseconds spent compiling the grammar; 0 when it came from the cache. */
  compileMs: number;
}

/** A cached grammar; `users` are matchers being made from it, which it must outlive. */
interface CacheEntry {
  grammar: Promise<CompiledGrammar>;
  users: number;
  evicted: boolean;
}

export class GrammarCompiler {
  readonly #xgrammar: XGrammarModule;
  readonly #compiler: XGrammarCompiler;
  readonly #cacheSize: number;
  /** Insertion order is recency order: a hit moves its entry to the end. */
  readonly #cache = new Map<string, CacheEntry>();

  private constructor(xgrammar: XGrammarModule, compiler: XGrammarCompiler, cacheSize: number) {
    this.#xgrammar = xgrammar;
    this.#compiler = compiler;
    this.#cacheSize = cacheSize;
  }

  /** Prepares the vocabulary (about a second): once per worker. */
  static async create(tokenizer: HarmonyTokenizer, cacheSize: number): Promise<GrammarCompiler> {
    const xgrammar = await loadXGrammar();
    const info = await xgrammar.TokenizerInfo.createTokenizerInfo(
      byteLevelVocabulary(tokenizer),
      "byte_level",
      false,
      VOCAB_SIZE,
      [CONSTRAINED_STOP_TOKEN],
    );
    // xgrammar's own cache is unbounded: this class keeps the bounded one.
    const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    return new GrammarCompiler(xgrammar, compiler, cacheSize);
  }

  /**
   * A fresh matcher for a constraint, its grammar compiled or taken from the cache; rejects with
   * GrammarError when xgrammar refuses the schema.
   */
  async matcher(constraint: OutputConstraint): Promise<MatcherResult> {
    const { schema, strict } = schemaOf(constraint);
    const key = `${strict ? "strict" : "loose"}:${schema}`;
    let entry = this.#cache.get(key);
    const started = performance.now();
    const cached = entry !== undefined;
    if (entry !== undefined) {
      this.#cache.delete(key);
    } else {
      const grammar = xgrammarCall(async () =>
        this.#compiler.compileGrammar(await schemaGrammar(this.#xgrammar, schema, strict))
      );
      entry = { grammar, users: 0, evicted: false };
      // A refused schema is not kept: the next request with it gets the same error.
      grammar.catch(() => this.#cache.get(key) === entry && this.#cache.delete(key));
    }
    this.#cache.set(key, entry);
    entry.users++;
    this.#evict();
    try {
      const grammar = await entry.grammar;
      const compileMs = cached ? 0 : performance.now() - started;
      const callArguments = constraint.kind === "json_schema" && constraint.target === "call";
      const matcher = await this.#xgrammar.GrammarMatcher.createGrammarMatcher(
        grammar,
        callArguments ? [CONSTRAINED_CALL_END] : undefined,
      );
      return { matcher, compileMs };
    } finally {
      entry.users--;
      this.#disposeIfUnused(entry);
    }
  }

  get cachedGrammars(): number {
    return this.#cache.size;
  }

  #evict(): void {
    while (this.#cache.size > this.#cacheSize) {
      const [oldest, entry] = this.#cache.entries().next().value as [string, CacheEntry];
      this.#cache.delete(oldest);
      entry.evicted = true;
      this.#disposeIfUnused(entry);
    }
  }

  /** Matchers hold their own reference to the grammar: the cache's handle goes once none is being made. */
  #disposeIfUnused(entry: CacheEntry): void {
    if (entry.evicted && entry.users === 0) entry.grammar.then((g) => g.dispose(), () => undefined);
  }
}
