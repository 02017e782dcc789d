/**
 * `npm start` as a user runs it: the ready banner says where the API and both /metrics listeners
 * are, on the documented default ports when those are free, and every URL it prints answers.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { GatewayConfigSchema, WorkerConfigSchema } from "../shared/config.ts";
import { deleteKeysUnder, type ManagedProcess, preferredPort, spawnManaged } from "./lib/local-stack.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const DEFAULT_PORTS = {
  gateway: GatewayConfigSchema.shape.METRICS_PORT.parse(undefined),
  worker: WorkerConfigSchema.shape.METRICS_PORT.parse(undefined),
};

test("preferredPort keeps a free port and replaces a taken one", async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
  const taken = (server.address() as { port: number }).port;
  try {
    const other = await preferredPort(taken);
    assert.notEqual(other, taken);
    assert.ok(other > 0);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  assert.equal(await preferredPort(taken), taken, "free again once its listener closed");
});

describe("npm start", () => {
  const prefix = `test-start-${randomBytes(4).toString("hex")}`;
  const apiKey = `sk-start${randomBytes(12).toString("hex")}`;
  let start: ManagedProcess;
  /** Whether the documented ports were free before the stack started. */
  const defaultsFree = { gateway: false, worker: false };

  before(async () => {
    defaultsFree.gateway = await preferredPort(DEFAULT_PORTS.gateway) === DEFAULT_PORTS.gateway;
    defaultsFree.worker = await preferredPort(DEFAULT_PORTS.worker) === DEFAULT_PORTS.worker;
    start = spawnManaged("npm start", process.execPath, ["scripts/start.mjs"], {
      env: { ...process.env, PORT: "0", REDIS_URL, REDIS_PREFIX: prefix, DEMO_API_KEY: apiKey },
    });
    await start.waitForLine(/gpt-oss-serve is ready/, 240_000);
  });
  after(async () => {
    await start?.stop("SIGINT", 15_000);
    const redis = new Redis(REDIS_URL);
    await deleteKeysUnder(redis, prefix);
    redis.disconnect();
  });

  test("the banner prints both /metrics URLs, on the default ports when they were free, and they answer", async () => {
    const [, gatewayMetrics] = await start.waitForLine(/^\s+metrics\s+(http:\S+\/metrics)\s+\(gateway\)$/, 5_000);
    const [, workerMetrics] = await start.waitForLine(/^\s+(http:\S+\/metrics)\s+\(worker\)$/, 5_000);
    const portOf = (url: string) => Number(new URL(url).port);
    for (const [name, url] of [["gateway", gatewayMetrics], ["worker", workerMetrics]] as const) {
      if (defaultsFree[name]) assert.equal(portOf(url), DEFAULT_PORTS[name], `${name} keeps its documented port`);
      else assert.notEqual(portOf(url), DEFAULT_PORTS[name], `${name}'s documented port was taken`);
      const res = await fetch(url);
      assert.equal(res.status, 200, `${name} ${url}`);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      assert.match(await res.text(), /^# HELP /m);
    }
  });

  test("the API URL and key of the banner serve a chat completion", async () => {
    const [, api] = await start.waitForLine(/^\s+URL\s+(http:\S+\/v1)\s/, 5_000);
    const res = await fetch(`${api}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-oss-tiny", messages: [{ role: "user", content: "Hello!" }], max_tokens: 2 }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).object, "chat.completion");
  });
});
