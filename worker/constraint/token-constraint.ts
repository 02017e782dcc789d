/**
 * One constrained request's grammar state: which tokens may come next, given those so far.
 *
 * The engine asks for the mask of generated position n only when it samples that position, so
 * the mask is computed here while the engine's step runs: `Generation` calls `accept` with token
 * n - 1 as soon as it arrives, then hands `nextMask()` to the engine.
 */
import type { GrammarMatcher } from "@mlc-ai/web-xgrammar";

/** A position where every token is allowed: the worker sends its all-ones mask, nothing is computed. */
export const FREE = "free";

/** What the grammar thread advances per request: a grammar's matcher, or function calling's phases. */
export interface StepConstraint {
  /** Advances past a sampled token; false when it was not allowed (it never should be). */
  accept(token: number): boolean | Promise<boolean>;
  /** The value is complete: nothing more is constrained. */
  readonly complete: boolean;
  /** The tokens allowed next; undefined when none is (a dead end, which must end the request). */
  nextMask(): Promise<Int32Array | typeof FREE | undefined>;
  dispose(): void;
}

export class TokenConstraint implements StepConstraint {
  readonly #matcher: GrammarMatcher;
  #disposed = false;

  constructor(matcher: GrammarMatcher) {
    this.#matcher = matcher;
  }

  /** Advances past a sampled token; false when the grammar does not allow it (it never should). */
  accept(token: number): boolean {
    return this.#matcher.acceptToken(token);
  }

  /** The stop token was accepted: the value is complete. */
  get complete(): boolean {
    return this.#matcher.isTerminated();
  }

  /**
   * Bitmask of the tokens allowed next (bit id % 32 of word id / 32), or undefined when the
   * grammar allows none: a dead end, which must end the request.
   */
  async nextMask(): Promise<Int32Array | undefined> {
    const mask = await this.#matcher.getNextTokenBitmask();
    return mask.some((word) => word !== 0) ? mask : undefined;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#matcher.dispose();
  }
}
