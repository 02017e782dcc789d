import assert from "node:assert/strict";
import { GatewayError } from "../errors.ts";
import { ChatCompletionRequestSchema, chatToGeneration } from "./chat.ts";
import { fromZodError } from "./issues.ts";
import { MAX_TOOLS, toolPlan } from "./tools.ts";

const user = [{ role: "user", content: "Where is order 42?" }];
const getOrder = {
  type: "function",
  function: {
    name: "get_order",
    description: "Looks an order up.",
    parameters: { type: "object", properties: { id: { type: "string" } }, required: ["id"] },
    strict: true,
  },
};
const handOver = { type: "function", function: { name: "hand_over" } };

function refusal(body: Record<string, unknown>) {
  const parsed = ChatCompletionRequestSchema.safeParse({ model: "m", ...body });
  assert.ok(!parsed.success, `expected ${JSON.stringify(body)} to be refused`);
  const err = fromZodError(parsed.error);
  assert.ok(err instanceof GatewayError && err.failure.reason === "invalid_request");
  return { code: err.failure.code, param: err.failure.param, message: err.failure.message };
}

Deno.test("tools: a call -> result loop becomes harmony turns and the tool plan", () => {
  const gen = chatToGeneration(ChatCompletionRequestSchema.parse({
    model: "m",
    tools: [getOrder, handOver],
    tool_choice: { type: "function", function: { name: "get_order" } },
    parallel_tool_calls: false,
    messages: [
      ...user,
      {
        role: "assistant",
        content: null,
        refusal: null,
        annotations: [],
        reasoning_content: "Look it up.",
        tool_calls: [{
          id: "call_1",
          type: "function",
          function: { name: "get_order", arguments: '{"id":"42"}' },
        }],
      },
      { role: "tool", tool_call_id: "call_1", content: [{ type: "text", text: "shipped" }] },
    ],
  }));
  assert.equal(gen.prompt.kind, "chat");
  if (gen.prompt.kind !== "chat") return;
  assert.deepEqual(gen.prompt.turns.slice(1), [
    {
      role: "assistant",
      content: "",
      reasoning: "Look it up.",
      toolCalls: [{ name: "get_order", arguments: '{"id":"42"}' }],
    },
    { role: "tool", name: "get_order", content: "shipped" },
  ]);
  assert.deepEqual(gen.prompt.tools?.choice, { name: "get_order" });
  assert.deepEqual(toolPlan(gen.prompt.tools).calling, {
    parallel: false,
    forced: { name: "get_order" },
  });
});

Deno.test("tools: tool_choice decides what is offered and forced", () => {
  const plan = (tools: unknown[], tool_choice?: unknown) => {
    const gen = chatToGeneration(
      ChatCompletionRequestSchema.parse({ model: "m", messages: user, tools, tool_choice }),
    );
    return gen.prompt.kind === "chat" ? toolPlan(gen.prompt.tools) : undefined;
  };
  assert.deepEqual(plan([getOrder]), {
    offered: [{
      name: "get_order",
      description: "Looks an order up.",
      parameters: getOrder.function.parameters,
    }],
    calling: { parallel: true },
  });
  assert.deepEqual(plan([getOrder], "none"), { offered: [] });
  assert.deepEqual(plan([getOrder], "required")?.forcedCall, { name: "get_order" });
  assert.deepEqual(plan([getOrder, handOver], "required")?.forcedCall, {});
  assert.deepEqual(plan([]), { offered: [] });
});

Deno.test("tools: bad input is a 400 naming the field", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{
      messages: user,
      tools: [getOrder],
      tool_choice: { type: "function", function: { name: "nope" } },
    }, "tool_choice.function.name"],
    [{ messages: user, tool_choice: "required" }, "tool_choice"],
    [{ messages: user, tool_choice: "sometimes" }, "tool_choice"],
    [
      { messages: [...user, { role: "tool", tool_call_id: "call_9", content: "x" }] },
      "messages[1].tool_call_id",
    ],
    [{ messages: [...user, { role: "tool", content: "x" }] }, "messages[1].tool_call_id"],
    [{ messages: user, tools: Array.from({ length: MAX_TOOLS + 1 }, () => handOver) }, "tools"],
    [{ messages: user, tools: [handOver, handOver] }, "tools[1].function.name"],
    [
      { messages: user, tools: [{ type: "function", function: { name: "has space" } }] },
      "tools[0].function.name",
    ],
    [{ messages: user, tools: [{ type: "retrieval" }] }, "tools[0].type"],
    [
      {
        messages: user,
        tools: [{ type: "function", function: { name: "f", parameters: { type: "string" } } }],
      },
      "tools[0].function.parameters.type",
    ],
    [
      {
        messages: user,
        tools: [{
          type: "function",
          function: {
            name: "f",
            parameters: { type: "object", properties: { a: { type: "text" } } },
          },
        }],
      },
      "tools[0].function.parameters.properties.a.type",
    ],
    [
      {
        messages: user,
        tools: [{
          type: "function",
          function: { name: "f", parameters: { type: "object", required: "a" } },
        }],
      },
      "tools[0].function.parameters.required",
    ],
    [
      {
        messages: [...user, {
          role: "assistant",
          tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: {} } }],
        }],
      },
      "messages[1].tool_calls[0].function.arguments",
    ],
  ];
  for (const [body, param] of cases) {
    const err = refusal(body);
    assert.equal(err.param, param, JSON.stringify(body));
    assert.equal(err.code, "invalid_value", JSON.stringify(body));
    assert.match(err.message, new RegExp(param.replace(/[[\].]/g, "\\$&")));
  }
});
