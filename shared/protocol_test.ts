import assert from "node:assert/strict";
import fc from "fast-check";
import { parseStreamEvent, StreamEventSchema } from "./protocol.ts";

/** The schema's verdict on a message: the parsed event, or that it throws. */
function bySchema(message: string): unknown {
  try {
    return StreamEventSchema.parse(JSON.parse(message));
  } catch {
    return "throws";
  }
}
function byParser(message: string): unknown {
  try {
    return parseStreamEvent(message);
  } catch {
    return "throws";
  }
}

Deno.test("parseStreamEvent accepts and refuses exactly what the schema does", () => {
  const field = fc.oneof(
    fc.constant(undefined),
    fc.integer({ min: -2, max: 5 }),
    fc.double({ noNaN: true }),
    fc.string({ maxLength: 3 }),
    fc.constant(null),
    fc.constant([]),
  );
  const candidate = fc.record({
    seq: field,
    type: fc.constantFrom("delta", "start", "done", "error", "other", undefined),
    content: field,
    reasoning: field,
    tokens: field,
    logprobs: fc.constantFrom(undefined, [], [{
      token: "a",
      logprob: -1,
      bytes: null,
      topLogprobs: [],
    }]),
    extra: fc.constantFrom(undefined, 1),
    workerId: fc.constantFrom(undefined, "w"),
  }, { requiredKeys: [] });
  const typical = { seq: 3, type: "delta", content: "hi", reasoning: "", tokens: 4 };
  let accepted = 0;
  fc.assert(
    fc.property(fc.oneof(candidate, fc.constant(typical)), (value) => {
      const message = JSON.stringify(value);
      const expected = bySchema(message);
      assert.deepEqual(byParser(message), expected, message);
      if (expected !== "throws") accepted++;
    }),
    { numRuns: 5000 },
  );
  assert.ok(accepted > 100, "valid events were generated too");
  assert.equal(byParser("[1]"), "throws");
  assert.equal(byParser("null"), "throws");
});
