import assert from "node:assert/strict";
import fc from "fast-check";
import { Tiktoken } from "js-tiktoken/lite";
import o200kBase from "js-tiktoken/ranks/o200k_base";
import { getTokenizer } from "./tokenizer.ts";

/** js-tiktoken's own (quadratic) encoder: the reference the fast merge must match id for id. */
const reference = new Tiktoken(o200kBase, {});
const tokenizer = getTokenizer();
const referenceEncode = (text: string) => reference.encode(text, [], []);

Deno.test("the O(n log n) merge gives js-tiktoken's ids for arbitrary text", () => {
  const text = fc.oneof(
    fc.string({ unit: "grapheme", maxLength: 200 }),
    fc.string({ unit: "binary", maxLength: 200 }),
    fc.string({ unit: fc.constantFrom("a", "b", "ab", " ", "\n", "漢", "字", "é", "😀", "'s", "1", "!", "<|end|>"), maxLength: 120 }),
  );
  fc.assert(fc.property(text, (t) => assert.deepEqual(tokenizer.encode(t), referenceEncode(t))), { numRuns: 400 });
});

Deno.test("long runs that the pre-tokenizer does not split merge to the same ids", () => {
  for (const unit of ["a", "A", " ", "漢", "😀", "!", "ab", "é"]) {
    const text = unit.repeat(300);
    assert.deepEqual(tokenizer.encode(text), referenceEncode(text), JSON.stringify(unit));
  }
});

Deno.test("a 1 MiB run of one letter is encoded (eight letters a token)", () => {
  assert.equal(tokenizer.encode("a".repeat(1 << 20)).length, (1 << 20) / 8);
});

Deno.test("a recurring text gets js-tiktoken's ids, the first time and from memory", () => {
  const text = "You are ChatGPT, a large language model.\n\nReasoning: high\n\n# Valid channels";
  assert.deepEqual(tokenizer.encodeRecurring(text), referenceEncode(text));
  assert.deepEqual(tokenizer.encodeRecurring(text), referenceEncode(text));
  assert.deepEqual(tokenizer.encodeRecurring(`${text}!`), referenceEncode(`${text}!`));
});
