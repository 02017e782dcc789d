/**
 * xgrammar (`@mlc-ai/web-xgrammar`, WASM) loaded for Node and Deno, with its errors made readable.
 *
 * The package is a UMD bundle built for browsers: loaded as an ES module under Node or Deno it
 * reaches for CommonJS's `require` and `__filename` while it initialises, and registers itself as
 * `globalThis.xgrammar`. Both are provided for the import only.
 *
 * xgrammar reports a bad grammar or schema by aborting the WASM call: the exception only says
 * "Aborted()", and the reason goes to the module's error printer (console.error, bound when the
 * module loads) as a `[FATAL] file:line: reason` line. The printer installed here keeps the last
 * such reason so `xgrammarCall` can throw it as a `GrammarError`; other lines pass through.
 */
import { createRequire } from "node:module";
import type * as XGrammar from "@mlc-ai/web-xgrammar";

export type XGrammarModule = typeof XGrammar;

/** A grammar or schema xgrammar refused; `message` is xgrammar's own reason. */
export class GrammarError extends Error {
  override name = "GrammarError";
}

let lastFatal: string | undefined;
let loading: Promise<XGrammarModule> | undefined;

const FATAL = /^\[FATAL\] [^:]*:\d+: ?/;

async function load(): Promise<XGrammarModule> {
  const g = globalThis as Record<string, unknown>;
  const saved = { require: g.require, __filename: g.__filename, error: console.error };
  g.require = createRequire(import.meta.url);
  g.__filename = new URL(import.meta.url).pathname;
  console.error = (...args: unknown[]) => {
    const line = args.map(String).join(" ");
    if (FATAL.test(line)) lastFatal = line.replace(FATAL, "");
    else if (!line.startsWith("Aborted(")) saved.error.apply(console, args);
  };
  try {
    await import("@mlc-ai/web-xgrammar");
    const module = g.xgrammar as XGrammarModule | undefined;
    if (module === undefined) throw new Error("@mlc-ai/web-xgrammar did not register globalThis.xgrammar");
    // The WASM instance starts on the first call: start it while the shims are in place.
    (await module.Grammar.builtinJSONGrammar()).dispose();
    return module;
  } finally {
    if (saved.require === undefined) delete g.require;
    else g.require = saved.require;
    if (saved.__filename === undefined) delete g.__filename;
    else g.__filename = saved.__filename;
    console.error = saved.error;
  }
}

/** The xgrammar module, loaded once per process. */
export function loadXGrammar(): Promise<XGrammarModule> {
  loading ??= load();
  return loading;
}

/** Calls that may abort, one after another: the reason read after a failure is then its own. */
let queue: Promise<unknown> = Promise.resolve();

/**
 * Runs one xgrammar call that may abort; an abort becomes a GrammarError with xgrammar's reason.
 * A compile holds the thread for as long as it takes (WASM is synchronous): queued calls first
 * give the event loop a turn, so other work (the grammar thread's mask requests, the gateway's
 * requests) runs between two compiles rather than after all of them.
 */
export function xgrammarCall<T>(call: () => Promise<T>): Promise<T> {
  const run = async () => {
    await new Promise((resolve) => setTimeout(resolve, 0));
    lastFatal = undefined;
    try {
      return await call();
    } catch (error) {
      if (lastFatal !== undefined) throw new GrammarError(lastFatal);
      throw error;
    }
  };
  const result = queue.then(run, run);
  queue = result.catch(() => undefined);
  return result;
}
