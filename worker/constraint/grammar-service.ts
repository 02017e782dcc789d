/**
 * The worker's handle on the grammar thread (grammar-thread.ts): opens a constraint per request
 * and advances it token by token, each step answered with the next token mask (transferred, not
 * copied) or the reason there is none. Everything xgrammar does runs on that thread.
 */
import { Worker } from "node:worker_threads";
import type { OutputConstraint } from "../../shared/protocol.ts";
import { GrammarError } from "../../shared/xgrammar.ts";
import { VOCAB_SIZE } from "../../shared/tokenizer.ts";

/** Every token allowed: the mask of a constrained request's positions after its value ended. */
export const ALL_TOKENS_MASK = new Int32Array(Math.ceil(VOCAB_SIZE / 32)).fill(-1);

/** What the thread is asked to do with the constraint `id`. */
export type ThreadCommand =
  | { id: number; kind: "open"; constraint: OutputConstraint; resumedTokens: readonly number[] }
  /** Accept `token` (absent: none yet) and compute the next mask. */
  | { id: number; kind: "advance"; token?: number }
  | { id: number; kind: "close" };

/** A command as sent: `call` numbers the message, and its reply names it. */
export type ThreadRequest = ThreadCommand & { call: number };

export type ThreadReply = { call: number } & (
  | { kind: "ready" }
  | { kind: "opened"; compileMs: number; rejected: boolean }
  | { kind: "failed"; grammar: boolean; message: string }
  | MaskStep
);

/** What follows a token: the next mask, or why there is none. */
export type MaskStep =
  | { kind: "mask"; mask: Int32Array }
  /** Every token is allowed (text outside a constrained call): send `ALL_TOKENS_MASK`. */
  | { kind: "free" }
  /** The value is complete (the stop token was accepted). */
  | { kind: "complete" }
  /** The grammar allows no next token. */
  | { kind: "dead_end" }
  /** The token is not one the grammar allowed (never expected: the engine samples within the mask). */
  | { kind: "rejected" };

export class GrammarService {
  readonly #thread: Worker;
  readonly #pending = new Map<number, (reply: ThreadReply) => void>();
  #nextId = 1;
  #nextCall = 1;
  #failure: Error | undefined;

  private constructor(thread: Worker) {
    this.#thread = thread;
    thread.on("message", (reply: ThreadReply) => {
      const resolve = this.#pending.get(reply.call);
      this.#pending.delete(reply.call);
      resolve?.(reply);
    });
    thread.on("error", (error) => this.#fail(error));
    thread.on("exit", (code) => this.#fail(new Error(`the grammar thread exited (code ${code})`)));
  }

  /** Starts the thread and waits until it has prepared the vocabulary (about a second). */
  static async start(cacheSize: number): Promise<GrammarService> {
    const thread = new Worker(new URL("./grammar-thread-entry.mjs", import.meta.url), { workerData: { cacheSize } });
    await new Promise<void>((resolve, reject) => {
      thread.once("message", () => resolve());
      thread.once("error", reject);
      thread.once("exit", (code) => reject(new Error(`the grammar thread exited (code ${code}) while starting`)));
    });
    return new GrammarService(thread);
  }

  /**
   * A request's constraint, at once: its grammar compiles (or comes from the cache) on the thread
   * and is advanced past `resumedTokens`, while the caller goes on (submits to the engine: the
   * first mask is asked for at once and comes when the grammar is ready). `ready` resolves with the
   * milliseconds spent compiling; it rejects with GrammarError when xgrammar refuses the schema or
   * the resumed output does not match it.
   */
  open(constraint: OutputConstraint, resumedTokens: readonly number[] = []): RemoteConstraint {
    const id = this.#nextId++;
    const ready = this.#ask({ id, kind: "open", constraint, resumedTokens }).then((reply) => {
      if (reply.kind === "failed") throw reply.grammar ? new GrammarError(reply.message) : new Error(reply.message);
      if (reply.kind !== "opened") throw new Error(`unexpected reply ${reply.kind}`);
      if (reply.rejected) throw new GrammarError("the resumed output does not match the grammar");
      return reply.compileMs;
    });
    // A caller that first waits on a mask learns of a refusal there too, and reads `ready` later.
    ready.catch(() => undefined);
    return new RemoteConstraint(this, id, ready);
  }

  /** @internal RemoteConstraint's step. */
  async advance(id: number, token: number | undefined): Promise<MaskStep> {
    const reply = await this.#ask({ id, kind: "advance", ...(token !== undefined ? { token } : {}) });
    if (reply.kind === "failed") throw reply.grammar ? new GrammarError(reply.message) : new Error(reply.message);
    if (reply.kind === "opened" || reply.kind === "ready") throw new Error(`unexpected reply ${reply.kind}`);
    return reply;
  }

  /** @internal */
  post(command: ThreadCommand): void {
    if (this.#failure === undefined) this.#thread.postMessage({ ...command, call: this.#nextCall++ });
  }

  close(): Promise<number> {
    return this.#thread.terminate();
  }

  #ask(command: ThreadCommand): Promise<ThreadReply> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const call = this.#nextCall++;
    return new Promise((resolve) => {
      this.#pending.set(call, resolve);
      this.#thread.postMessage({ ...command, call } satisfies ThreadRequest);
    });
  }

  /** A dead thread fails every request waiting on it, and every later one. */
  #fail(error: Error): void {
    this.#failure ??= error;
    for (const [call, resolve] of this.#pending) resolve({ call, kind: "failed", grammar: false, message: error.message });
    this.#pending.clear();
  }
}

/** One request's grammar state, held by the grammar thread. */
export class RemoteConstraint {
  readonly #service: GrammarService;
  readonly #id: number;
  #closed = false;
  /** Milliseconds spent compiling (0: cached); rejects with GrammarError for a refused grammar. */
  readonly ready: Promise<number>;

  constructor(service: GrammarService, id: number, ready: Promise<number>) {
    this.#service = service;
    this.#id = id;
    this.ready = ready;
  }

  /** Accepts `token` (none before the first) and gives what may come next. */
  advance(token?: number): Promise<MaskStep> {
    return this.#service.advance(this.#id, token);
  }

  dispose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#service.post({ id: this.#id, kind: "close" });
  }
}
