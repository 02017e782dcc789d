import assert from "node:assert/strict";
import { leadingLiterals } from "./leading_literals.ts";

Deno.test("the opening word list of a rule, across top-level branches", () => {
  assert.deepEqual(leadingLiterals("\\b(?:ignore|disregard)\\b[^.\\n]{0,40}?\\bprevious\\b"), [
    "ignore",
    "disregard",
  ]);
  assert.deepEqual(leadingLiterals("\\bdo anything now\\b|\\b(?:stay|remain) in character\\b"), [
    "do anything now",
    "stay",
    "remain",
  ]);
  assert.deepEqual(leadingLiterals("越狱|(?:开发者|上帝)模式"), ["越狱", "开发者", "上帝"]);
});

Deno.test("a literal ends where the text stops being literal", () => {
  assert.deepEqual(leadingLiterals("n'?t"), ["n"], "an optional character is not part of it");
  assert.deepEqual(leadingLiterals("abc+d"), ["abc"], "a repeated character is, once");
  assert.deepEqual(leadingLiterals("ab{2}c"), ["ab"]);
  assert.deepEqual(leadingLiterals("free (?:of|from)"), ["free "]);
  assert.deepEqual(leadingLiterals("/etc/(?:passwd|shadow)"), ["/etc/"]);
  assert.deepEqual(leadingLiterals("sk-\\w+"), ["sk-"]);
  assert.deepEqual(leadingLiterals("\\.\\.[\\\\/]"), [".."], "escaped punctuation is literal");
  assert.deepEqual(leadingLiterals("\\[(?:🔒|x)"), ["["]);
  assert.deepEqual(leadingLiterals("(?:🔒|🔓)"), ["🔒", "🔓"], "astral characters whole");
  assert.deepEqual(leadingLiterals("a.b"), ["a"]);
});

Deno.test("zero-width openers, required groups and small classes are looked through", () => {
  assert.deepEqual(leadingLiterals("(?<![0-9])(?:\\+|00)[1-9]"), ["+", "00"]);
  assert.deepEqual(leadingLiterals("^(?=x)xy"), ["xy"]);
  assert.deepEqual(
    leadingLiterals("(?:\\.\\.[\\\\/]){2,}"),
    [".."],
    "a group repeated at least once",
  );
  assert.deepEqual(leadingLiterals("(\\w+)|ab"), undefined, "a capture group without a literal");
  assert.deepEqual(leadingLiterals("[;'\"]\\s*drop"), [";", "'", '"']);
  assert.deepEqual(leadingLiterals("(?:\\bfoo|bar)x"), ["foo", "bar"], "groups are analysed alike");
});

Deno.test("no anchors when some match could begin anywhere", () => {
  for (
    const pattern of [
      "\\d{3}",
      "[A-Za-z]+@",
      "[^x]y",
      "(?:ab)?c",
      "(?:ab)*c",
      "a?b",
      "x|\\s+y",
      "(?:a|)b",
      ".*secret",
      "(?<name>x)",
    ]
  ) {
    assert.equal(leadingLiterals(pattern), undefined, pattern);
  }
});
