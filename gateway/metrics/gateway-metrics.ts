/**
 * Every metric the gateway exposes on /metrics, defined in one place so the
 * names the dashboard queries and the names instrumentation writes cannot drift.
 */
import { LATENCY_BUCKETS_SECONDS, Registry, TOKEN_GAP_BUCKETS_SECONDS } from "../../shared/metrics.ts";

export function createGatewayMetrics() {
  const registry = new Registry();
  return {
    registry,
    requests: registry.counter({
      name: "gateway_http_requests_total",
      help: "HTTP requests by route, status and tenant (status of a stream: the status it started with).",
      labelNames: ["route", "status", "tenant"],
    }),
    requestDuration: registry.histogram({
      name: "gateway_request_duration_seconds",
      help: "End-to-end latency: request received to last byte (a stream's last event).",
      labelNames: ["route"],
      buckets: LATENCY_BUCKETS_SECONDS,
    }),
    timeToFirstToken: registry.histogram({
      name: "gateway_time_to_first_token_seconds",
      help: "Request received to the first generated token relayed.",
      labelNames: ["model"],
      buckets: LATENCY_BUCKETS_SECONDS,
    }),
    interTokenLatency: registry.histogram({
      name: "gateway_inter_token_latency_seconds",
      help: "Time between consecutive generated tokens, as relayed.",
      labelNames: ["model"],
      buckets: TOKEN_GAP_BUCKETS_SECONDS,
    }),
    queueWait: registry.histogram({
      name: "gateway_queue_wait_seconds",
      help: "Enqueue to a worker taking the job.",
      labelNames: ["model"],
      buckets: LATENCY_BUCKETS_SECONDS,
    }),
    queueDepth: registry.gauge({
      name: "gateway_queue_depth",
      help: "Generation jobs waiting for a worker.",
    }),
    eventListeners: registry.gauge({
      name: "gateway_event_listeners",
      help: "Requests whose worker events this gateway is listening for.",
    }),
    promptTokens: registry.counter({
      name: "gateway_prompt_tokens_total",
      help: "Prompt tokens of generations, by tenant and model.",
      labelNames: ["tenant", "model"],
    }),
    completionTokens: registry.counter({
      name: "gateway_completion_tokens_total",
      help: "Completion tokens relayed, by tenant and model.",
      labelNames: ["tenant", "model"],
    }),
    rateLimitRejections: registry.counter({
      name: "gateway_rate_limit_rejections_total",
      help: "Requests refused with 429, by tenant and the limit hit.",
      labelNames: ["tenant", "limit"],
    }),
    safetyActions: registry.counter({
      name: "gateway_safety_actions_total",
      help: "Safety filter actions, by stage (input, output), category and action.",
      labelNames: ["stage", "category", "action"],
    }),
  };
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;
