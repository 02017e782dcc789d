import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { getTokenizer, SPECIAL_TOKENS, type SpecialToken } from "../../shared/tokenizer.ts";
import { createOutputParser, type OutputParser, type Route, toolCallId } from "./output-parser.ts";
import type { Job, ToolCall } from "../../shared/protocol.ts";
import { accumulateToolCalls } from "../../shared/tool-calls.ts";

const tokenizer = getTokenizer();

/** Token ids of a template like ["<|channel|>", "analysis", "<|message|>", "text", "<|reserved_200100|>"]. */
function ids(parts: string[]): number[] {
  return parts.flatMap((p) => {
    if (p in SPECIAL_TOKENS) return [SPECIAL_TOKENS[p as SpecialToken]];
    const reserved = /^<\|reserved_(\d+)\|>$/.exec(p);
    return reserved ? [Number(reserved[1])] : tokenizer.encode(p);
  });
}

function run(parser: OutputParser, tokenIds: number[]) {
  let content = "";
  let reasoning = "";
  const routes: Route[] = [];
  for (const id of tokenIds) {
    const piece = parser.push(id);
    content += piece.content;
    reasoning += piece.reasoning;
    routes.push(piece.route);
  }
  const last = parser.finish();
  return { content: content + last.content, reasoning: reasoning + last.reasoning, routes };
}

const chat = (parts: string[]) =>
  run(createOutputParser({ kind: "chat", requestId: "r" }, tokenizer), ids(parts));

test("analysis goes to reasoning, final to content, structure to neither", () => {
  const out = chat([
    "<|channel|>",
    "analysis",
    "<|message|>",
    "User greets; reply briefly.",
    "<|end|>",
    "<|start|>",
    "assistant",
    "<|channel|>",
    "final",
    "<|message|>",
    "Hello! 你好 🎉",
    "<|return|>",
  ]);
  assert.equal(out.reasoning, "User greets; reply briefly.");
  assert.equal(out.content, "Hello! 你好 🎉");
});

test("a call the job does not allow comes back as content, and a <|constrain|> type never leaks", () => {
  const out = chat([
    "<|channel|>",
    "commentary to=functions.lookup ",
    "<|constrain|>",
    "json",
    "<|message|>",
    '{"q":1}',
    "<|call|>",
  ]);
  assert.equal(out.content, '{"q":1}');
  assert.equal(out.reasoning, "");
});

test("only tokens of the answer are routed to content", () => {
  const tokenIds = ids(["<|channel|>", "final", "<|message|>", "Hi", "<|return|>"]);
  const { routes } = run(createOutputParser({ kind: "chat", requestId: "r" }, tokenizer), tokenIds);
  assert.deepEqual(routes, ["none", "none", "none", "content", "none"]);
});

test("output without a channel header is all content, specials dropped", () => {
  const out = chat([
    "random words",
    "<|end|>",
    " more",
    "<|reserved_200100|>",
    "<|channel|>",
    " tail",
  ]);
  assert.equal(out.content, "random words more tail");
  assert.equal(out.reasoning, "");
});

test("reserved and other special ids inside a message are dropped", () => {
  const out = chat([
    "<|channel|>",
    "final",
    "<|message|>",
    "a",
    "<|startoftext|>",
    "b",
    "<|reserved_201000|>",
    "c",
    "<|end|>",
  ]);
  assert.equal(out.content, "abc");
});

test("text between messages, outside any body, is dropped", () => {
  const out = chat([
    "<|channel|>",
    "analysis",
    "<|message|>",
    "think",
    "<|end|>",
    "stray",
    "<|start|>",
    "assistant",
    "<|channel|>",
    "final",
    "<|message|>",
    "answer",
  ]);
  assert.equal(out.reasoning, "think");
  assert.equal(out.content, "answer");
});

test("nothing after <|return|> is emitted", () => {
  const out = chat(["<|channel|>", "final", "<|message|>", "done", "<|return|>", "extra"]);
  assert.equal(out.content, "done");
});

test("a message with no channel in its header is taken as the answer", () => {
  const out = chat(["<|message|>", "bare body", "<|end|>"]);
  assert.equal(out.content, "bare body");
});

test("an incomplete character before <|end|> becomes U+FFFD in the right text", () => {
  const partialEmoji = tokenizer.encode("🎉")[0]; // "f0 9f 8e": the emoji's first three bytes
  assert.equal(tokenizer.tokenBytes(partialEmoji).length, 3);
  const tokenIds = [
    ...ids(["<|channel|>", "analysis", "<|message|>", "x"]),
    partialEmoji,
    SPECIAL_TOKENS["<|end|>"],
  ];
  const out = run(createOutputParser({ kind: "chat", requestId: "r" }, tokenizer), tokenIds);
  assert.equal(out.reasoning, "x\uFFFD");
});

test("completion output is raw text with special tokens dropped", () => {
  const out = run(
    createOutputParser({ kind: "completion", requestId: "r" }, tokenizer),
    ids(["Once upon", "<|end|>", " a time 😀", "<|endoftext|>"]),
  );
  assert.equal(out.content, "Once upon a time 😀");
  assert.equal(out.reasoning, "");
});

test("any sequence of harmony messages routes each body whole to its text", () => {
  const message = fc.record({
    channel: fc.constantFrom("analysis", "commentary", "final"),
    text: fc.string({
      unit: fc.constantFrom("a", " ", "你", "😀", "<", "|", "\n", "é"),
      maxLength: 12,
    }),
  });
  fc.assert(
    fc.property(fc.array(message, { minLength: 1, maxLength: 5 }), (messages) => {
      const parts = messages.flatMap((m, i) => [
        ...(i > 0 ? ["<|start|>", "assistant"] : []),
        "<|channel|>",
        m.channel,
        "<|message|>",
        m.text,
        i === messages.length - 1 ? "<|return|>" : "<|end|>",
      ]).filter((p) => p !== "");
      const out = chat(parts);
      // A commentary message without recipient is a preamble meant for the user.
      assert.equal(
        out.content,
        messages.filter((m) => m.channel !== "analysis").map((m) => m.text).join(""),
      );
      assert.equal(
        out.reasoning,
        messages.filter((m) => m.channel === "analysis").map((m) => m.text).join(""),
      );
    }),
  );
});

/** Runs a chat job allowed to call functions; returns texts, joined calls and whether the parser cut the turn. */
function withTools(parts: string[], tools: Job["tools"] & object) {
  const parser = createOutputParser({ kind: "chat", requestId: "req-1", tools }, tokenizer);
  let content = "";
  let reasoning = "";
  const calls: ToolCall[] = [];
  let endedAt: number | undefined;
  ids(parts).forEach((id, i) => {
    if (endedAt !== undefined) return;
    const piece = parser.push(id);
    content += piece.content;
    reasoning += piece.reasoning;
    if (piece.toolCall) accumulateToolCalls(calls, [piece.toolCall]);
    if (parser.turnEnded) endedAt = i;
  });
  return { content, reasoning, calls, turnEnded: parser.turnEnded, callCount: parser.calls };
}

const CALL = (name: string, args: string, where: "channel" | "role" = "channel") => [
  "<|start|>",
  where === "role" ? `assistant to=functions.${name}` : "assistant",
  "<|channel|>",
  where === "role" ? "commentary " : `commentary to=functions.${name} `,
  "<|constrain|>",
  "json",
  "<|message|>",
  args,
  "<|call|>",
];

test("a call to functions.NAME becomes a tool call with a stable id; reasoning and preamble keep their routes", () => {
  const out = withTools([
    "<|channel|>",
    "analysis",
    "<|message|>",
    "Need the order tool.",
    "<|end|>",
    "<|start|>",
    "assistant",
    "<|channel|>",
    "commentary",
    "<|message|>",
    "Checking your order.",
    "<|end|>",
    ...CALL("get_order", '{"id": "A-42"}'),
  ], { parallel: false });
  assert.equal(out.reasoning, "Need the order tool.");
  assert.equal(out.content, "Checking your order.");
  assert.deepEqual(out.calls, [{
    id: toolCallId("req-1", 0),
    name: "get_order",
    arguments: '{"id": "A-42"}',
  }]);
  assert.match(out.calls[0].id, /^call_[0-9a-f]{24}$/);
  assert.equal(
    out.turnEnded,
    false,
    "<|call|> is the engine's stop token here: the parser does not cut",
  );
});

test("the recipient may stand in the role part of the header; broken JSON comes back as written", () => {
  const out = withTools(CALL("open_ticket", '{"subject": "late', "role"), { parallel: false });
  assert.deepEqual(out.calls.map((c) => [c.name, c.arguments]), [[
    "open_ticket",
    '{"subject": "late',
  ]]);
  assert.equal(out.content, "");
});

test("parallel calls: calls after <|call|> are read on; the model imagining the result ends the turn", () => {
  const out = withTools([
    "<|channel|>",
    "commentary to=functions.get_order ",
    "<|constrain|>",
    "json",
    "<|message|>",
    '{"id":1}',
    "<|call|>",
    ...CALL("get_user", '{"id":2}'),
    "<|start|>",
    "functions.get_user to=assistant",
    "<|channel|>",
    "commentary",
    "<|message|>",
    "imagined result",
  ], { parallel: true });
  assert.deepEqual(out.calls.map((c) => [c.name, c.arguments]), [["get_order", '{"id":1}'], [
    "get_user",
    '{"id":2}',
  ]]);
  assert.equal(out.callCount, 2);
  assert.equal(out.turnEnded, true);
  assert.equal(out.content + out.reasoning, "", "nothing of the imagined reply leaks");
});

test("a forced call: the output starts with the named function's arguments, or with a function name", () => {
  const named = withTools(['{"city":"Paris"}', "<|call|>"], {
    parallel: true,
    forced: { name: "weather" },
  });
  assert.deepEqual(named.calls.map((c) => [c.name, c.arguments]), [[
    "weather",
    '{"city":"Paris"}',
  ]]);
  const any = withTools([
    "get_user ",
    "<|constrain|>",
    "json",
    "<|message|>",
    "{}",
    "<|call|>",
    "<|return|>",
  ], {
    parallel: true,
    forced: {},
  });
  assert.deepEqual(any.calls.map((c) => [c.name, c.arguments]), [["get_user", "{}"]]);
  assert.equal(any.turnEnded, true);
});
