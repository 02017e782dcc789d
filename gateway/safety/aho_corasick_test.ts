import assert from "node:assert/strict";
import fc from "fast-check";
import { AhoCorasick, nonOverlapping } from "./aho_corasick.ts";

/** Every occurrence by brute force, for comparison. */
function naive(patterns: string[], text: string) {
  const out: string[] = [];
  patterns.forEach((p, i) => {
    if (p === "" || patterns.indexOf(p) !== i) return;
    for (let at = text.indexOf(p); at !== -1; at = text.indexOf(p, at + 1)) out.push(`${i}@${at}`);
  });
  return out.sort();
}

Deno.test("finds every occurrence, overlapping and nested ones included", () => {
  const ac = new AhoCorasick(["he", "she", "his", "hers"]);
  const found = ac.findAll("ushers").map((m) => `${ac.patterns[m.pattern]}@${m.start}`);
  assert.deepEqual(found.sort(), ["he@2", "hers@2", "she@1"]);
});

Deno.test("Chinese patterns match inside running text", () => {
  const ac = new AhoCorasick(["违禁", "禁词", "敏感内容"]);
  const found = ac.findAll("这里有违禁词和敏感内容。").map((m) => ac.patterns[m.pattern]);
  assert.deepEqual(found, ["违禁", "禁词", "敏感内容"]);
  assert.equal(ac.maxLength, 4);
});

Deno.test("agrees with brute force on random patterns and texts", () => {
  const alphabet = fc.constantFrom("a", "b", "c", "中", "文");
  const str = (max: number) => fc.array(alphabet, { maxLength: max }).map((a) => a.join(""));
  fc.assert(
    fc.property(fc.array(str(4), { minLength: 1, maxLength: 8 }), str(40), (patterns, text) => {
      for (const asciiTable of [false, true]) {
        const ac = new AhoCorasick(patterns, { asciiTable });
        assert.deepEqual(
          ac.findAll(text).map((m) => `${m.pattern}@${m.start}`).sort(),
          naive(patterns, text),
        );
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("an automaton too large for the ASCII table agrees with brute force without it", () => {
  // 3 000 six-letter words over six letters: some 7 000 states, past the table's bound.
  fc.assert(
    fc.property(
      fc.array(fc.stringMatching(/^[a-f]{6}$/), { minLength: 3000, maxLength: 3000 }),
      fc.stringMatching(/^[a-f 中]{0,300}$/),
      (patterns, text) => {
        const ac = new AhoCorasick(patterns, { asciiTable: true });
        assert.deepEqual(
          ac.findAll(text).map((m) => `${m.pattern}@${m.start}`).sort(),
          naive(patterns, text),
        );
      },
    ),
    { numRuns: 5 },
  );
});

Deno.test("nonOverlapping keeps leftmost, then longest", () => {
  const ac = new AhoCorasick(["abc", "bcd", "ab", "cde"]);
  const kept = nonOverlapping(ac.findAll("abcde")).map((m) => ac.patterns[m.pattern]);
  assert.deepEqual(kept, ["abc"]);
});
