/**
 * The provisioned Grafana dashboard is well-formed, points at the provisioned
 * Prometheus datasource and covers what operators watch. (That every metric it
 * queries is really exposed is checked against the running stack in
 * metrics.test.ts.)
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { dashboard, dashboardMetrics, datasourceUid, metricsIn, type Panel, queryPanels } from "./dashboard.ts";

test("dashboard JSON: identity, unique ids, grid inside 24 columns, one datasource", () => {
  const panels: Panel[] = dashboard.panels;
  assert.equal(typeof dashboard.uid, "string");
  assert.equal(typeof dashboard.title, "string");
  assert.equal(typeof dashboard.schemaVersion, "number");
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, "panel ids are unique");
  const uid = datasourceUid;
  assert.ok(uid, "the provisioned datasource has a fixed uid");
  for (const panel of panels) {
    const { x, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && h > 0 && x + w <= 24, `${panel.title}: grid position`);
  }
  for (const panel of queryPanels) {
    assert.equal(panel.datasource?.uid, uid, `${panel.title}: datasource`);
    assert.ok(panel.targets && panel.targets.length > 0, `${panel.title}: has queries`);
    assert.equal(new Set(panel.targets.map((t) => t.refId)).size, panel.targets.length, `${panel.title}: refIds`);
    for (const target of panel.targets) {
      assert.ok(metricsIn(target.expr).length > 0, `${panel.title}: "${target.expr}" queries a metric of ours`);
      let depth = 0;
      for (const ch of target.expr) {
        depth += ch === "(" ? 1 : ch === ")" ? -1 : 0;
        assert.ok(depth >= 0, `${panel.title}: balanced parentheses in "${target.expr}"`);
      }
      assert.equal(depth, 0, `${panel.title}: balanced parentheses in "${target.expr}"`);
    }
  }
});

test("the dashboard covers queue, latency, throughput, KV usage, prefix-cache hits and per-tenant traffic", () => {
  const queried = new Set(dashboardMetrics().map((m) => m.metric));
  for (const metric of [
    "gateway_queue_depth",
    "gateway_queue_wait_seconds",
    "gateway_time_to_first_token_seconds",
    "gateway_inter_token_latency_seconds",
    "gateway_request_duration_seconds",
    "engine_generation_tokens_total",
    "engine_kv_cache_usage_ratio",
    "engine_prefix_cache_hits_tokens_total",
    "engine_prefix_cache_queries_tokens_total",
    "gateway_http_requests_total",
  ]) {
    assert.ok(queried.has(metric), `${metric} is on the dashboard`);
  }
  assert.ok(
    queryPanels.some((p) => p.targets!.some((t) => /by \([^)]*tenant/.test(t.expr))),
    "some panel breaks traffic down by tenant",
  );
});
