/**
 * /metrics on the real stack (gateway, Redis, worker with the native engine):
 * both endpoints parse with a strict Prometheus text parser, their counters
 * agree exactly with the requests this test sent and the usage the API
 * reported, and every metric the Grafana dashboard queries is exposed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import type { Family } from "../helpers/prometheus-text.ts";
import { parsePrometheusText, sampleSum } from "../helpers/prometheus-text.ts";
import { MODEL_NAME, type Stack, startStack } from "../helpers/stack.ts";
import { workerMetricsUrl } from "../../scripts/lib/local-stack.ts";
import { dashboardMetrics } from "./dashboard.ts";

const CHAT_ROUTE = "/v1/chat/completions";

async function scrape(url: string): Promise<Map<string, Family>> {
  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

describe("/metrics on the real stack", { timeout: 120_000 }, () => {
  let stack: Stack;
  let workerUrl: string;
  let gateway: Map<string, Family>;
  let worker: Map<string, Family>;
  const sent = { ok: 0, unauthorized: 0, promptTokens: 0, completionTokens: 0 };

  before(async () => {
    stack = await startStack();
    workerUrl = await workerMetricsUrl(stack.workers[0]);
    const client = stack.client();
    const messages = [{ role: "user" as const, content: "Count to three." }];
    for (const seed of [1, 2]) {
      const answer = await client.chat.completions.create({ model: MODEL_NAME, messages, max_tokens: 6, seed });
      sent.ok++;
      sent.promptTokens += answer.usage!.prompt_tokens;
      sent.completionTokens += answer.usage!.completion_tokens;
    }
    const stream = await client.chat.completions.create({
      model: MODEL_NAME,
      messages,
      max_tokens: 8,
      seed: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      if (chunk.usage) {
        sent.promptTokens += chunk.usage.prompt_tokens;
        sent.completionTokens += chunk.usage.completion_tokens;
      }
    }
    sent.ok++;
    const stranger = stack.client({ apiKey: "sk-notAKeyThisGatewayKnows0000" });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(stranger.chat.completions.create({ model: MODEL_NAME, messages }), { status: 401 });
      sent.unauthorized++;
    }
    gateway = await scrape(stack.metricsUrl);
    worker = await scrape(workerUrl);
  });
  after(async () => await stack?.stop());

  it("the gateway counts requests by route, status and tenant", () => {
    assert.equal(sampleSum(gateway, "gateway_http_requests_total", { route: CHAT_ROUTE, status: "200", tenant: "e2e" }), sent.ok);
    assert.equal(sampleSum(gateway, "gateway_http_requests_total", { route: CHAT_ROUTE, status: "401", tenant: "none" }), sent.unauthorized);
    assert.equal(sampleSum(gateway, "gateway_request_duration_seconds_count", { route: CHAT_ROUTE }), sent.ok + sent.unauthorized);
  });

  it("token counters equal the usage the API reported", () => {
    const tenant = { tenant: "e2e", model: MODEL_NAME };
    assert.equal(sampleSum(gateway, "gateway_prompt_tokens_total", tenant), sent.promptTokens);
    assert.equal(sampleSum(gateway, "gateway_completion_tokens_total", tenant), sent.completionTokens);
    assert.equal(sampleSum(worker, "worker_prompt_tokens_total", { model: MODEL_NAME }), sent.promptTokens);
    assert.equal(sampleSum(worker, "worker_completion_tokens_total", { model: MODEL_NAME }), sent.completionTokens);
    assert.ok(sampleSum(worker, "engine_generation_tokens_total") >= sent.completionTokens);
    // Every prompt token was either prefilled or found in the prefix cache.
    assert.ok(
      sampleSum(worker, "engine_prompt_tokens_total") + sampleSum(worker, "engine_prefix_cache_hits_tokens_total") >=
        sent.promptTokens,
    );
  });

  it("every generation has one queue wait, one time to first token and one job outcome", () => {
    const model = { model: MODEL_NAME };
    assert.equal(sampleSum(gateway, "gateway_queue_wait_seconds_count", model), sent.ok);
    assert.equal(sampleSum(gateway, "gateway_time_to_first_token_seconds_count", model), sent.ok);
    assert.equal(sampleSum(worker, "worker_queue_wait_seconds_count", model), sent.ok);
    assert.equal(sampleSum(worker, "worker_jobs_total", model), sent.ok);
  });

  it("the engine is idle again and reports its KV cache", () => {
    assert.equal(sampleSum(worker, "engine_running_sequences"), 0);
    assert.equal(sampleSum(worker, "engine_kv_cache_blocks_used"), 0);
    assert.ok(sampleSum(worker, "engine_kv_cache_blocks_total") > 0);
    assert.equal(sampleSum(worker, "engine_kv_cache_usage_ratio"), 0);
    assert.equal(sampleSum(gateway, "gateway_queue_depth"), 0);
  });

  it("every metric the Grafana dashboard queries is on the gateway's or the worker's /metrics", () => {
    for (const { panel, metric } of dashboardMetrics()) {
      assert.ok(gateway.has(metric) || worker.has(metric), `${panel}: ${metric} is not exposed`);
    }
  });
});
