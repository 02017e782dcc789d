/**
 * Function calls through the real app (real Redis, a scripted worker speaking
 * the real protocol): what the job says about tools, and the response shapes
 * the openai SDKs read, whole and streamed.
 */
import assert from "node:assert/strict";
import { renderChat } from "../../shared/harmony.ts";
import { getTokenizer } from "../../shared/tokenizer.ts";
import { parseSSE, TEST_MODEL, testGateway, type WorkerScript } from "../test_gateway.ts";

const tools = [
  {
    type: "function",
    function: {
      name: "get_order",
      parameters: { type: "object", properties: { id: { type: "string" } } },
    },
  },
  { type: "function", function: { name: "hand_over" } },
];
const messages = [{ role: "user", content: "Where is order 7?" }];

const twoCalls: WorkerScript = async function* (job) {
  yield { type: "start", workerId: "w1" };
  yield { type: "delta", content: "Checking.", reasoning: "Use the tool.", tokens: 4 };
  yield {
    type: "delta",
    content: "",
    reasoning: "",
    tokens: 6,
    toolCalls: [{ index: 0, id: "call_a", name: "get_order", arguments: '{"id":' }],
  };
  yield {
    type: "delta",
    content: "",
    reasoning: "",
    tokens: 9,
    toolCalls: [{ index: 0, arguments: '"7"}' }, {
      index: 1,
      id: "call_b",
      name: "hand_over",
      arguments: "{}",
    }],
  };
  yield {
    type: "done",
    finishReason: "tool_calls",
    usage: { promptTokens: job.promptTokenIds.length, completionTokens: 9 },
  };
};

Deno.test("tools: a named tool_choice opens the call in the prompt and is in the job", async () => {
  const g = await testGateway("tools-job");
  try {
    await g.heartbeat();
    const jobs = await g.startWorker(twoCalls);
    const res = await g.post("/v1/chat/completions", {
      model: TEST_MODEL,
      messages,
      tools,
      tool_choice: { type: "function", function: { name: "get_order" } },
      parallel_tool_calls: false,
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const [job] = jobs;
    assert.deepEqual(job.tools, { parallel: false, forced: { name: "get_order" } });
    const expected = renderChat(getTokenizer(), [{ role: "user", content: "Where is order 7?" }], {
      reasoningEffort: "medium",
      currentDate: new Date().toISOString().slice(0, 10),
      tools: [
        { name: "get_order", parameters: tools[0].function.parameters },
        { name: "hand_over" },
      ],
      forcedCall: { name: "get_order" },
    });
    assert.deepEqual(job.promptTokenIds, expected);
  } finally {
    await g.close();
  }
});

Deno.test("tools: the chat.completion carries tool_calls and the preamble; streams send SDK-shaped deltas", async () => {
  const g = await testGateway("tools-shapes");
  try {
    await g.heartbeat();
    await g.startWorker(twoCalls);
    const whole =
      await (await g.post("/v1/chat/completions", { model: TEST_MODEL, messages, tools })).json();
    assert.deepEqual(whole.choices[0].message, {
      role: "assistant",
      content: "Checking.",
      reasoning_content: "Use the tool.",
      refusal: null,
      annotations: [],
      tool_calls: [
        {
          id: "call_a",
          type: "function",
          function: { name: "get_order", arguments: '{"id":"7"}' },
        },
        { id: "call_b", type: "function", function: { name: "hand_over", arguments: "{}" } },
      ],
    });
    assert.equal(whole.choices[0].finish_reason, "tool_calls");

    const res = await g.post("/v1/chat/completions", {
      model: TEST_MODEL,
      messages,
      tools,
      stream: true,
    });
    const chunks = parseSSE(await res.text()).data.slice(0, -1).map((d) => JSON.parse(d));
    assert.deepEqual(chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []), [
      {
        index: 0,
        id: "call_a",
        type: "function",
        function: { name: "get_order", arguments: '{"id":' },
      },
      { index: 0, function: { arguments: '"7"}' } },
      {
        index: 1,
        id: "call_b",
        type: "function",
        function: { name: "hand_over", arguments: "{}" },
      },
    ]);
    assert.equal(chunks.at(-1).choices[0].finish_reason, "tool_calls");
  } finally {
    await g.close();
  }
});
