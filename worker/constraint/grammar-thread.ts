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
import { GrammarCompiler } from "./grammar-compiler.ts";
import { TokenConstraint } from "./token-constraint.ts";
import type { ThreadReply, ThreadRequest } from "./grammar-service.ts";

const port = parentPort!;
const compiler = await GrammarCompiler.create(getTokenizer(), (workerData as { cacheSize: number }).cacheSize);
const constraints = new Map<number, TokenConstraint>();

function reply(message: ThreadReply, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** The mask after `token` (none: the first mask), or why there is none. */
async function advance(id: number, constraint: TokenConstraint, token: number | undefined): Promise<void> {
  if (token !== undefined && !constraint.accept(token)) return reply({ id, kind: "rejected" });
  if (constraint.complete) return reply({ id, kind: "complete" });
  const mask = await constraint.nextMask();
  if (mask === undefined) return reply({ id, kind: "dead_end" });
  reply({ id, kind: "mask", mask }, [mask.buffer as ArrayBuffer]);
}

async function handle(request: ThreadRequest): Promise<void> {
  const { id } = request;
  switch (request.kind) {
    case "open": {
      try {
        const { matcher, compileMs } = await compiler.matcher(request.constraint);
        const constraint = new TokenConstraint(matcher);
        constraints.set(id, constraint);
        const rejected = request.resumedTokens.some((token) => !constraint.accept(token));
        reply({ id, kind: "opened", compileMs, rejected });
      } catch (error) {
        const grammar = error instanceof GrammarError;
        reply({ id, kind: "failed", grammar, message: grammar ? error.message : String(error) });
      }
      return;
    }
    case "advance": {
      const constraint = constraints.get(id);
      if (constraint === undefined) return reply({ id, kind: "failed", grammar: false, message: "no such constraint" });
      return advance(id, constraint, request.token);
    }
    case "close":
      constraints.get(id)?.dispose();
      constraints.delete(id);
      return;
  }
}

port.on("message", (request: ThreadRequest) => {
  handle(request).catch((error) =>
    reply({ id: request.id, kind: "failed", grammar: false, message: String(error) })
  );
});
reply({ id: 0, kind: "ready" });
