/**
 * Warms the request path's CPU-bound steps before the gateway listens: the body's validation, the
 * input safety filter and the prompt's rendering run over synthetic chat requests until V8 has
 * compiled them with its optimizing tiers. Without it a fresh gateway ran them in the interpreter
 * and baseline tiers for its first requests: in the paced stack bench (`bench/stack`, one stream,
 * 957-word prompts, a gateway started for the level) the first request's filter took 19 ms and its
 * rendering 4.7 ms, the next seven 0.9–5.4 ms and 0.3–0.6 ms, against 0.4 and 0.14 ms warm. Every
 * gateway start (deploy, restart, scale-out) paid that on its first requests.
 * Pure work: no Redis, no metrics, no state kept but the tokenizer's cache of ordinary words.
 */
import type { HarmonyTokenizer } from "../shared/tokenizer.ts";
import { renderPrompt } from "./middleware/prompt.ts";
import { filterInput } from "./safety/input_filter.ts";
import { compilePolicy, DEFAULT_POLICY } from "./safety/policy.ts";
import { ChatCompletionRequestSchema, chatToGeneration } from "./schemas/chat.ts";

/** Rounds over each prompt; startup grows by about a millisecond each. */
const ROUNDS = 100;

const SENTENCE = "Please summarise the quarterly report below, then list the three largest risks " +
  "with one sentence of advice for each of them. ";
/** About a thousand words of plain ASCII, and text beyond it (the filter's general path). */
const PROMPTS = [
  SENTENCE.repeat(50),
  `${SENTENCE.repeat(20)}Résumé: café, naïve, 東京 — “quoted”.\n\n${SENTENCE.repeat(20)}`,
];

export function warmRequestPath(tokenizer: HarmonyTokenizer): void {
  const policy = compilePolicy(DEFAULT_POLICY);
  for (let round = 0; round < ROUNDS; round++) {
    const prompt = PROMPTS[round % PROMPTS.length];
    const body = JSON.stringify({
      model: "warm-up",
      messages: [{ role: "user", content: prompt }],
      max_tokens: 16,
      stream: true,
    });
    const generation = chatToGeneration(ChatCompletionRequestSchema.parse(JSON.parse(body)));
    filterInput([{ text: prompt }], policy);
    renderPrompt(tokenizer, generation.prompt);
  }
}
