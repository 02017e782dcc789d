/**
 * The renderer against the token sequences openai/harmony documents
 * (docs/format.md "Function calling", and the renderer's test data for JSON
 * Schema parameters), written here as harmony text: special-token names become
 * their ids, the text between them is encoded as ordinary text.
 */
import assert from "node:assert/strict";
import { type ChatTurn, type FunctionTool, renderChat } from "./harmony.ts";
import { typeScriptType } from "./harmony-tools.ts";
import { getTokenizer } from "./tokenizer.ts";
import { harmonyTextIds } from "../worker/test-support/fixtures.ts";

const tok = getTokenizer();
const harmonyIds = (text: string) => harmonyTextIds(tok, text);

const WEATHER_TOOLS: FunctionTool[] = [
  { name: "get_location", description: "Gets the location of the user." },
  {
    name: "get_current_weather",
    description: "Gets the current weather in the provided location.",
    parameters: {
      type: "object",
      properties: {
        location: { type: "string", description: "The city and state, e.g. San Francisco, CA" },
        format: { type: "string", enum: ["celsius", "fahrenheit"], default: "celsius" },
      },
      required: ["location"],
    },
  },
  {
    name: "get_multiple_weathers",
    description: "Gets the current weather in the provided list of locations.",
    parameters: {
      type: "object",
      properties: {
        locations: {
          type: "array",
          items: { type: "string" },
          description: 'List of city and state, e.g. ["San Francisco, CA", "New York, NY"]',
        },
        format: { type: "string", enum: ["celsius", "fahrenheit"], default: "celsius" },
      },
      required: ["locations"],
    },
  },
];

const SYSTEM_WITH_TOOLS =
  `<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
Knowledge cutoff: 2024-06
Current date: 2025-06-28

Reasoning: high

# Valid channels: analysis, commentary, final. Channel must be included for every message.
Calls to these tools must go to the commentary channel: 'functions'.<|end|>`;

const DEVELOPER_WITH_TOOLS = `<|start|>developer<|message|># Instructions

Use a friendly tone.

# Tools

## functions

namespace functions {

// Gets the location of the user.
type get_location = () => any;

// Gets the current weather in the provided location.
type get_current_weather = (_: {
// The city and state, e.g. San Francisco, CA
location: string,
format?: "celsius" | "fahrenheit", // default: celsius
}) => any;

// Gets the current weather in the provided list of locations.
type get_multiple_weathers = (_: {
// List of city and state, e.g. ["San Francisco, CA", "New York, NY"]
locations: string[],
format?: "celsius" | "fahrenheit", // default: celsius
}) => any;

} // namespace functions<|end|>`;

const OPTIONS = {
  reasoningEffort: "high",
  currentDate: "2025-06-28",
  tools: WEATHER_TOOLS,
} as const;

Deno.test("harmony: tools, a call with its reasoning and the call's result render as documented", () => {
  const turns: ChatTurn[] = [
    { role: "developer", content: "Use a friendly tone." },
    { role: "user", content: "What is the weather like in SF?" },
    {
      role: "assistant",
      content: "",
      reasoning: "Need to use function get_weather.",
      toolCalls: [{ name: "get_weather", arguments: '{"location":"San Francisco"}' }],
    },
    { role: "tool", name: "get_weather", content: '{"sunny": true, "temperature": 20}' },
  ];
  const expected = SYSTEM_WITH_TOOLS + DEVELOPER_WITH_TOOLS +
    "<|start|>user<|message|>What is the weather like in SF?<|end|>" +
    "<|start|>assistant<|channel|>analysis<|message|>Need to use function get_weather.<|end|>" +
    '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"San Francisco"}<|call|>' +
    '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"sunny": true, "temperature": 20}<|end|>' +
    "<|start|>assistant";
  assert.deepEqual(renderChat(tok, turns, OPTIONS), harmonyIds(expected));
});

Deno.test("harmony: reasoning before a final answer is dropped; a preamble goes to commentary", () => {
  const turns: ChatTurn[] = [
    { role: "user", content: "Order 7?" },
    {
      role: "assistant",
      content: "Looking it up.",
      reasoning: "Need the order tool.",
      toolCalls: [{ name: "get_order", arguments: '{"id":7}' }, {
        name: "get_user",
        arguments: "{}",
      }],
    },
    { role: "tool", name: "get_order", content: "shipped" },
    { role: "tool", name: "get_user", content: "Ann" },
    { role: "assistant", content: "Shipped, Ann.", reasoning: "Tell her." },
    { role: "user", content: "Thanks" },
  ];
  const ids = renderChat(tok, turns, { reasoningEffort: "medium" });
  const expectedTail = "<|start|>user<|message|>Order 7?<|end|>" +
    "<|start|>assistant<|channel|>commentary<|message|>Looking it up.<|end|>" +
    '<|start|>assistant<|channel|>commentary to=functions.get_order <|constrain|>json<|message|>{"id":7}<|call|>' +
    "<|start|>assistant<|channel|>commentary to=functions.get_user <|constrain|>json<|message|>{}<|call|>" +
    "<|start|>functions.get_order to=assistant<|channel|>commentary<|message|>shipped<|end|>" +
    "<|start|>functions.get_user to=assistant<|channel|>commentary<|message|>Ann<|end|>" +
    "<|start|>assistant<|channel|>final<|message|>Shipped, Ann.<|end|>" +
    "<|start|>user<|message|>Thanks<|end|><|start|>assistant";
  const tail = harmonyIds(expectedTail);
  assert.deepEqual(ids.slice(-tail.length), tail);
  // No tools offered: the system message has no function-calling line and there is no developer message.
  assert.deepEqual(
    ids.slice(0, ids.length - tail.length),
    harmonyIds(
      "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\n" +
        "Reasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>",
    ),
  );
});

Deno.test("harmony: a forced call ends the prompt inside the call's header", () => {
  const turns: ChatTurn[] = [{ role: "user", content: "Hi" }];
  const named = renderChat(tok, turns, { ...OPTIONS, forcedCall: { name: "get_location" } });
  const namedTail = harmonyIds(
    "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>commentary to=functions.get_location <|constrain|>json<|message|>",
  );
  assert.deepEqual(named.slice(-namedTail.length), namedTail);
  const any = renderChat(tok, turns, { ...OPTIONS, forcedCall: {} });
  const anyTail = harmonyIds(
    "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>commentary to=functions.",
  );
  assert.deepEqual(any.slice(-anyTail.length), anyTail);
});

Deno.test("harmony: JSON Schema features render as the harmony renderer's kitchensink", () => {
  const parameters = {
    type: "object",
    description: "params object",
    properties: {
      string: {
        type: "string",
        title: "STRING",
        description: "A string",
        examples: ["hello", "world"],
      },
      string_nullable: {
        type: "string",
        nullable: true,
        description: "A nullable string",
        default: "the default",
      },
      string_enum: { type: "string", enum: ["a", "b", "c"] },
      oneof_string_or_number: {
        oneOf: [
          { type: "string", default: "default_string_in_oneof" },
          { type: "number", description: "numbers can happen too" },
        ],
        description: "a oneof",
        default: 20,
      },
    },
  };
  assert.equal(
    typeScriptType(parameters),
    `// params object
{
// STRING
//
// A string
// Examples:
// - "hello"
// - "world"
string?: string,
// A nullable string
string_nullable?: string | null, // default: "the default"
string_enum?: "a" | "b" | "c",
// a oneof
// default: 20
oneof_string_or_number?:
 | string // default: "default_string_in_oneof"
 | number // numbers can happen too
,
}`,
  );
});
