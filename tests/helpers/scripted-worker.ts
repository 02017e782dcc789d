/**
 * A worker process whose engine plays scripted replies instead of running a
 * model: everything else (job processor, harmony parser, publisher, stream
 * log, heartbeat) is the real worker. End-to-end tests use it where the tiny
 * random model would never write what a flow needs (a function call, an answer
 * built on a tool's result).
 *
 *   node --import tsx tests/helpers/scripted-worker.ts '<rules as JSON>'
 *
 * The reply is the first rule whose `when` occurs in the prompt's last
 * complete message (a user message or a tool result) and whose `forced`
 * matches whether the prompt ends inside a forced call header; no match gets
 * a short final answer. Replies are harmony text (`<|call|>` etc. are special
 * tokens), written as the model would after the prompt.
 */
import { getTokenizer } from "../../shared/tokenizer.ts";
import { runWorkerProcess } from "../../worker/worker-process.ts";
import { harmonyTextIds } from "../../worker/test-support/fixtures.ts";
import { ScriptedEngine } from "../../worker/test-support/scripted-engine.ts";

export interface ReplyRule {
  when: string;
  /** The prompt opens a call (tool_choice forcing); default false. */
  forced?: boolean;
  reply: string;
}

const NO_MATCH = "<|channel|>final<|message|>No scripted reply matches.<|return|>";
const MAX_MODEL_LEN = 8192;

const rules = JSON.parse(process.argv[2] ?? "[]") as ReplyRule[];
const tokenizer = getTokenizer();
const decoder = new TextDecoder();

function replyTo(prompt: readonly number[]): number[] {
  const text = decoder.decode(
    new Uint8Array(prompt.flatMap((id) => [...tokenizer.tokenBytes(id)])),
  );
  const forced = !text.endsWith("<|start|>assistant");
  const complete = text.slice(0, Math.max(0, text.lastIndexOf("<|end|>")));
  const last = complete.slice(complete.lastIndexOf("<|message|>") + "<|message|>".length);
  const rule = rules.find((r) => last.includes(r.when) && (r.forced ?? false) === forced);
  return harmonyTextIds(tokenizer, rule?.reply ?? NO_MATCH);
}

await runWorkerProcess(() => new ScriptedEngine(replyTo, 2, MAX_MODEL_LEN));
