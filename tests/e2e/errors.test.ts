/**
 * Every failure the gateway reports, end to end: the official SDK must see an
 * OpenAI error with the right class, status, type, code and param, and every
 * error response carries x-request-id.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { MODEL_NAME, type Stack, startStack } from "../helpers/stack.ts";

const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "hi" }];

/** The APIError a call rejects with. */
async function apiError(call: () => Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err}`);
    assert.match(err.requestID ?? "", /^[0-9a-f]{32}$/, `errors carry x-request-id (${err.status} ${err.message})`);
    return err;
  }
  assert.fail("the request succeeded");
}

function expectError(
  err: InstanceType<typeof OpenAI.APIError>,
  expected: { status: number; type: string; code: string | null; param?: string | null },
) {
  assert.deepEqual(
    { status: err.status, type: err.type, code: err.code, param: err.param },
    { param: null, ...expected },
    err.message,
  );
}

describe("errors", () => {
  let stack: Stack;
  let client: OpenAI;
  before(async () => {
    stack = await startStack({ gatewayEnv: { MAX_BODY_BYTES: String(256 * 1024) } });
    client = stack.client({ timeout: 10_000 });
  });
  after(async () => await stack?.stop());

  it("malformed JSON is a 400 invalid_request_error", async () => {
    const res = await fetch(`${stack.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
      body: '{"model": "x", "messages": [',
    });
    assert.equal(res.status, 400);
    assert.ok(res.headers.get("x-request-id"));
    const { error } = await res.json();
    assert.equal(error.type, "invalid_request_error");
    assert.match(error.message, /could not parse the JSON body/);
  });

  it("schema violations name the field path", async () => {
    const err = await apiError(() =>
      client.chat.completions.create({
        model: MODEL_NAME,
        messages: [{ role: "user", content: [{ type: "text", text: 5 as unknown as string }] }],
      })
    );
    assert.ok(err instanceof OpenAI.BadRequestError);
    expectError(err, { status: 400, type: "invalid_request_error", code: "invalid_value", param: "messages[0].content[0].text" });

    expectError(
      await apiError(() => client.chat.completions.create({ model: MODEL_NAME, messages, temperature: 9 })),
      { status: 400, type: "invalid_request_error", code: "invalid_value", param: "temperature" },
    );
  });

  it("unsupported fields and values are refused by name, never ignored", async () => {
    expectError(
      await apiError(() =>
        client.chat.completions.create({
          model: MODEL_NAME,
          messages,
          // The deprecated predecessor of `tools`.
          functions: [{ name: "f", parameters: {} }],
        })
      ),
      { status: 400, type: "invalid_request_error", code: "unsupported_parameter", param: "functions" },
    );
    expectError(
      await apiError(() =>
        client.chat.completions.create({
          model: MODEL_NAME,
          messages,
          response_format: {
            type: "json_schema",
            json_schema: { name: "t", schema: { type: "object", properties: { d: { type: "string", format: "date" } } } },
          },
        })
      ),
      {
        status: 400,
        type: "invalid_request_error",
        code: "unsupported_value",
        param: "response_format.json_schema.schema.properties.d.format",
      },
    );
    expectError(
      await apiError(() => client.chat.completions.create({ model: MODEL_NAME, messages, logit_bias: { "42": 5 } })),
      { status: 400, type: "invalid_request_error", code: "unsupported_parameter", param: "logit_bias" },
    );
    expectError(
      await apiError(() => client.chat.completions.create({ model: MODEL_NAME, messages, n: 2 })),
      { status: 400, type: "invalid_request_error", code: "unsupported_value", param: "n" },
    );
    expectError(
      await apiError(() => client.completions.create({ model: MODEL_NAME, prompt: ["a", "b"] })),
      { status: 400, type: "invalid_request_error", code: "unsupported_value", param: "prompt" },
    );
  });

  it("an unknown model is a 404 model_not_found", async () => {
    const err = await apiError(() => client.chat.completions.create({ model: "gpt-4o", messages }));
    assert.ok(err instanceof OpenAI.NotFoundError);
    expectError(err, { status: 404, type: "invalid_request_error", code: "model_not_found", param: "model" });
    const retrieve = await apiError(() => client.models.retrieve("gpt-4o"));
    assert.equal(retrieve.status, 404);
  });

  it("a missing or invalid key is a 401 invalid_api_key", async () => {
    const wrong = await apiError(() => stack.client({ apiKey: "sk-not-a-real-key-0000000000" }).models.list());
    assert.ok(wrong instanceof OpenAI.AuthenticationError);
    expectError(wrong, { status: 401, type: "invalid_request_error", code: "invalid_api_key" });

    const res = await fetch(`${stack.baseURL}/models`);
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, "invalid_api_key");
  });

  it("a prompt over the context length is a 400 context_length_exceeded", async () => {
    // Ordinary prose, ~6000 tokens (a repeated single word reads as an injection to the safety filter).
    const long = Array.from({ length: 400 }, (_, i) => `Note ${i}: the quarterly budget review moved to Thursday.`).join(" ");
    const err = await apiError(() =>
      client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: long }] })
    );
    expectError(err, { status: 400, type: "invalid_request_error", code: "context_length_exceeded", param: "messages" });
    assert.match(err.message, /maximum context length is 4096 tokens/);

    const withBudget = await apiError(() => client.completions.create({ model: MODEL_NAME, prompt: "hi", max_tokens: 4096 }));
    expectError(withBudget, { status: 400, type: "invalid_request_error", code: "context_length_exceeded", param: "prompt" });
  });

  it("an oversize body is a 413", async () => {
    const err = await apiError(() =>
      client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: "x".repeat(300 * 1024) }] })
    );
    expectError(err, { status: 413, type: "invalid_request_error", code: "request_too_large" });
  });

  it("an unknown URL is a 404 in OpenAI's shape", async () => {
    const res = await fetch(`${stack.baseURL}/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.apiKey}` },
      body: "{}",
    });
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "unknown_url");
  });

  // Last: it stops the stack's only worker.
  it("no live worker is a 503 with Retry-After, and /readyz turns not ready", async () => {
    assert.equal((await fetch(`${stack.url}/readyz`)).status, 200);
    await stack.workers[0].stop();
    // A stopping worker removes its heartbeat; /readyz reads heartbeats afresh
    // (requests use a view at most a quarter second old).
    assert.equal((await fetch(`${stack.url}/readyz`)).status, 503);
    const err = await apiError(() => client.chat.completions.create({ model: MODEL_NAME, messages }));
    assert.ok(err instanceof OpenAI.InternalServerError);
    expectError(err, { status: 503, type: "server_error", code: "no_worker_available" });
    assert.equal(err.headers?.get("retry-after"), "5");
    assert.equal((await fetch(`${stack.url}/healthz`)).status, 200, "the process itself is up");
  });
});
