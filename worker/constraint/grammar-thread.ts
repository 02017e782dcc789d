/**
 * The grammar thread: xgrammar (WASM, synchronous) runs here, off the worker's main thread, so a
 * grammar compile or a slow mask never holds up heartbeats, Redis or other streams. It owns the
 * compiler (vocabulary, cache) and every request's matcher; `GrammarService` is its only client.
 *
 * Messages are handled in arrival order; for one request they come one at a time (the next token
 * exists only once the engine had the previous mask).
 */
import { parentPort, workerData } from "node:worker_threads";
import { getTokenizer } from "../../shared/tokenizer.ts";
import { GrammarError } from "../../shared/xgrammar.ts";
import type { OutputConstraint } from "../../shared/protocol.ts";
import { GrammarCompiler, jsonGrammar } from "./grammar-compiler.ts";
import { FREE, type StepConstraint, TokenConstraint } from "./token-constraint.ts";
import { ToolCallConstraint } from "./tool-call-constraint.ts";
import type { ThreadReply, ThreadRequest } from "./grammar-service.ts";

const port = parentPort!;
const tokenizer = getTokenizer();
const compiler = await GrammarCompiler.create(tokenizer, (workerData as { cacheSize: number }).cacheSize);
// json_object is one grammar for every request that asks for it: compiled before the first one.
await compiler.prepare(jsonGrammar({ kind: "json_object" }));
/**
 * Each request's constraint, a promise until its grammar is compiled, and the end of its last
 * step: a step may await (a call's grammar still compiling), so the next one starts after it,
 * whenever the tokens arrive (a resumed stream's, or an engine that does not wait for masks).
 */
const constraints = new Map<number, { constraint: Promise<StepConstraint>; steps: Promise<void> }>();

function reply(message: ThreadReply, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** A request's constraint, and when it is ready (its grammars compiled; ms spent compiling). */
function open(constraint: OutputConstraint): { constraint: Promise<StepConstraint>; ready: Promise<number> } {
  if (constraint.kind === "tool_calls") {
    const calls = new ToolCallConstraint(compiler, tokenizer, constraint);
    return { constraint: Promise.resolve(calls), ready: calls.ready };
  }
  const opened = compiler.matcher(jsonGrammar(constraint));
  return {
    constraint: opened.then(({ matcher }) => new TokenConstraint(matcher)),
    ready: opened.then(({ compileMs }) => compileMs),
  };
}

/** The mask after `token` (none: the first mask), or why there is none. */
async function advance(call: number, constraint: StepConstraint, token: number | undefined): Promise<void> {
  if (token !== undefined && !(await constraint.accept(token))) return reply({ call, kind: "rejected" });
  if (constraint.complete) return reply({ call, kind: "complete" });
  const mask = await constraint.nextMask();
  if (mask === undefined) return reply({ call, kind: "dead_end" });
  if (mask === FREE) return reply({ call, kind: "free" });
  reply({ call, kind: "mask", mask }, [mask.buffer as ArrayBuffer]);
}

function failure(call: number, error: unknown): ThreadReply {
  const grammar = error instanceof GrammarError;
  return { call, kind: "failed", grammar, message: grammar ? error.message : String(error) };
}

async function handle(request: ThreadRequest): Promise<void> {
  const { id, call } = request;
  switch (request.kind) {
    case "open": {
      // Registered before anything is awaited: the request's first advance may come right after.
      const { constraint, ready } = open(request.constraint);
      const resumed = constraint.then(async (c) => {
        for (const token of request.resumedTokens) if (!(await c.accept(token))) return { c, rejected: true };
        return { c, rejected: false };
      });
      const stored = resumed.then(({ c }) => c);
      stored.catch(() => undefined); // the failure is this open's reply; a later advance reads it too
      constraints.set(id, { constraint: stored, steps: Promise.resolve() });
      try {
        const [{ rejected }, compileMs] = await Promise.all([resumed, ready]);
        reply({ call, kind: "opened", compileMs, rejected });
      } catch (error) {
        reply(failure(call, error));
      }
      return;
    }
    case "advance": {
      const entry = constraints.get(id);
      if (entry === undefined) return reply({ call, kind: "failed", grammar: false, message: "no such constraint" });
      entry.steps = entry.steps.then(async () => {
        try {
          await advance(call, await entry.constraint, request.token);
        } catch (error) {
          reply(failure(call, error));
        }
      });
      return entry.steps;
    }
    case "close": {
      const entry = constraints.get(id);
      constraints.delete(id);
      entry?.steps.then(() => entry.constraint).then((c) => c.dispose(), () => undefined);
      return;
    }
  }
}

port.on("message", (request: ThreadRequest) => {
  handle(request).catch((error) => reply(failure(request.call, error)));
});
reply({ call: 0, kind: "ready" });
