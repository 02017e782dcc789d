/**
 * o200k_harmony: o200k_base's BPE ranks (ids 0..199997, shipped by js-tiktoken)
 * plus gpt-oss's harmony special tokens. Special ids are fixed here, never taken
 * from another package (some number o200k's specials differently).
 */
import { Tiktoken } from "js-tiktoken/lite";
import o200kBase from "js-tiktoken/ranks/o200k_base";
import { bytePairEncode } from "./bpe.ts";

export const VOCAB_SIZE = 201088;

export const SPECIAL_TOKENS = {
  "<|startoftext|>": 199998,
  "<|endoftext|>": 199999,
  "<|return|>": 200002,
  "<|constrain|>": 200003,
  "<|channel|>": 200005,
  "<|start|>": 200006,
  "<|end|>": 200007,
  "<|message|>": 200008,
  "<|call|>": 200012,
} as const;
export type SpecialToken = keyof typeof SPECIAL_TOKENS;

/** Tokens that end generation (Hugging Face's generation config for gpt-oss). */
export const STOP_TOKEN_IDS: readonly number[] = [200002, 199999, 200012];

/** Pieces whose ids are remembered, and the longest one worth remembering (in UTF-16 units). */
const PIECE_CACHE_SIZE = 50_000;
const PIECE_CACHE_MAX_LENGTH = 64;
/** Whole texts whose ids are remembered by `encodeRecurring` (system messages: a handful). */
const RECURRING_CACHE_SIZE = 64;

/** Smallest id that is not an ordinary BPE rank. */
export const FIRST_SPECIAL_ID = 199998;

export class HarmonyTokenizer {
  /** rank -> UTF-8 bytes, read from the BPE table (js-tiktoken keeps it as `textMap`). */
  readonly #bytes: Map<number, Uint8Array>;
  /** "b0,b1,..." -> rank (js-tiktoken's `rankMap`). */
  readonly #ranks: Map<string, number>;
  /** o200k's pre-tokenizer: text is cut into pieces, each merged on its own. */
  readonly #pieces = new RegExp(o200kBase.pat_str, "gu");
  readonly #specialNames = new Map<number, string>();
  readonly #encoder = new TextEncoder();
  /**
   * Ids of pieces seen before. Text is mostly common words, and a piece costs a UTF-8 encode and
   * a string key per lookup otherwise: with the cache, rendering a chat prompt is ~5x cheaper.
   */
  readonly #pieceIds = new Map<string, readonly number[]>();
  readonly #recurringIds = new Map<string, readonly number[]>();

  constructor() {
    const tables = new Tiktoken(o200kBase, {}) as unknown as {
      textMap: Map<number, Uint8Array>;
      rankMap: Map<string, number>;
    };
    this.#bytes = tables.textMap;
    this.#ranks = tables.rankMap;
    for (const [name, id] of Object.entries(SPECIAL_TOKENS)) this.#specialNames.set(id, name);
  }

  /**
   * Encodes ordinary text; text that looks like a special token stays ordinary
   * text. The same ids as js-tiktoken's `encode`, but each piece is merged in
   * O(n log n) (bpe.ts): its quadratic merge let one long run of a letter
   * stall the process.
   */
  encode(text: string): number[] {
    const ids: number[] = [];
    // exec() on the one expression: matchAll() would clone it on every call.
    const pieces = this.#pieces;
    pieces.lastIndex = 0;
    for (let m = pieces.exec(text); m !== null; m = pieces.exec(text)) {
      const piece = m[0];
      let pieceIds = this.#pieceIds.get(piece);
      if (pieceIds === undefined) {
        pieceIds = this.#encodePiece(piece);
        // Bounded: a flood of distinct pieces (random text) restarts the cache, never grows it.
        if (this.#pieceIds.size >= PIECE_CACHE_SIZE) this.#pieceIds.clear();
        if (piece.length <= PIECE_CACHE_MAX_LENGTH) this.#pieceIds.set(piece, pieceIds);
      }
      for (let i = 0; i < pieceIds.length; i++) ids.push(pieceIds[i]);
    }
    return ids;
  }

  /**
   * `encode` for a text that recurs verbatim, such as the system message every chat request
   * starts with: its ids are remembered whole (a few texts at most: the cache restarts when
   * full), so it is not cut into pieces again on every request.
   */
  encodeRecurring(text: string): readonly number[] {
    let ids = this.#recurringIds.get(text);
    if (ids === undefined) {
      ids = this.encode(text);
      if (this.#recurringIds.size >= RECURRING_CACHE_SIZE) this.#recurringIds.clear();
      this.#recurringIds.set(text, ids);
    }
    return ids;
  }

  #encodePiece(piece: string): readonly number[] {
    const bytes = this.#encoder.encode(piece);
    const whole = this.#ranks.get(bytes.join(","));
    if (whole !== undefined) return [whole];
    const rankOf = (start: number, end: number) =>
      this.#ranks.get(bytes.subarray(start, end).join(","));
    return bytePairEncode(bytes.length, rankOf);
  }

  special(name: SpecialToken): number {
    return SPECIAL_TOKENS[name];
  }

  isSpecial(id: number): boolean {
    return id >= FIRST_SPECIAL_ID;
  }

  /** Name of a special token (`<|reserved_N|>` for the reserved range). */
  specialName(id: number): string {
    return this.#specialNames.get(id) ?? `<|reserved_${id}|>`;
  }

  /**
   * The bytes a token stands for. Ordinary tokens may hold part of a UTF-8
   * character: callers decode incrementally. Special tokens give their name.
   */
  tokenBytes(id: number): Uint8Array {
    const bytes = this.#bytes.get(id);
    if (bytes) return bytes;
    if (id < 0 || id >= VOCAB_SIZE) throw new RangeError(`token id ${id} outside the vocabulary`);
    return this.#encoder.encode(this.specialName(id));
  }
}

let shared: HarmonyTokenizer | undefined;
/** One tokenizer per process: building the BPE table takes a few hundred ms. */
export function getTokenizer(): HarmonyTokenizer {
  shared ??= new HarmonyTokenizer();
  return shared;
}
