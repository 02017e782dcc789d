import { test } from "node:test";
import assert from "node:assert/strict";
import { getTokenizer } from "../../shared/tokenizer.ts";
import type { Job } from "../../shared/protocol.ts";
import { OutputAssembler } from "./output-assembler.ts";
import { harmonyOutput, sampling } from "../test-support/fixtures.ts";

const tokenizer = getTokenizer();
function job(
  kind: Job["kind"],
  stop: string[],
  logprobs = false,
): Pick<Job, "kind" | "requestId" | "stop" | "sampling"> {
  return {
    kind,
    requestId: "r",
    stop,
    sampling: sampling({ logprobs, topLogprobs: logprobs ? 1 : 0 }),
  };
}

function collect(assembler: OutputAssembler, tokens: number[]) {
  let content = "";
  let reasoning = "";
  let consumed = 0;
  const logprobs = [];
  for (const token of tokens) {
    consumed++;
    const d = assembler.accept({ token, logprob: -0.5, top: [{ token, logprob: -0.5 }] });
    content += d.content;
    reasoning += d.reasoning;
    logprobs.push(...d.logprobs);
    if (d.stopped) return { content, reasoning, logprobs, consumed, stopped: true };
  }
  const last = assembler.finish();
  return {
    content: content + last.content,
    reasoning: reasoning + last.reasoning,
    logprobs,
    consumed,
    stopped: false,
  };
}

const chatTokens = harmonyOutput(tokenizer, [
  { channel: "analysis", text: "We say END soon." },
  { channel: "final", text: "Answer text END of it" },
]);

test("stop strings cut the answer, not the reasoning", () => {
  const out = collect(new OutputAssembler(tokenizer, job("chat", [" END"])), chatTokens);
  assert.equal(out.reasoning, "We say END soon.");
  assert.equal(out.content, "Answer text");
  assert.equal(out.stopped, true);
  assert.ok(
    out.consumed < chatTokens.length,
    "generation stops as soon as the stop string completes",
  );
});

test("held-back text is released when generation ends without a match", () => {
  const out = collect(
    new OutputAssembler(tokenizer, job("completion", ["xyz"])),
    tokenizer.encode("ends with x"),
  );
  assert.equal(out.content, "ends with x");
  assert.equal(out.stopped, false);
});

test("logprobs are given for the answer's tokens only, with their bytes", () => {
  const out = collect(new OutputAssembler(tokenizer, job("chat", [], true)), chatTokens);
  const answerTokens = tokenizer.encode("Answer text END of it");
  assert.equal(out.logprobs.length, answerTokens.length);
  assert.equal(out.logprobs.map((l) => l.token).join(""), "Answer text END of it");
  assert.deepEqual(out.logprobs[0], {
    token: "Answer",
    logprob: -0.5,
    bytes: [...new TextEncoder().encode("Answer")],
    topLogprobs: [{
      token: "Answer",
      logprob: -0.5,
      bytes: [...new TextEncoder().encode("Answer")],
    }],
  });
});

test("no logprobs unless requested", () => {
  assert.deepEqual(
    collect(new OutputAssembler(tokenizer, job("completion", [])), tokenizer.encode("hi")).logprobs,
    [],
  );
});
