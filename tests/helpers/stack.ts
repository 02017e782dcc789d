/**
 * A whole stack of real processes for end-to-end and fault tests: Redis (the
 * shared one when it answers, or a private redis-server), the Deno gateway on
 * a free port, and Node workers with the native CPU engine and the generated
 * tiny model, all under a REDIS_PREFIX of the test's own. `stop()` ends the
 * processes and deletes exactly the keys under that prefix (never FLUSH).
 *
 *   const stack = await startStack();
 *   const client = stack.client();          // official `openai` SDK, no retries
 *   ...
 *   await stack.stop();
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import OpenAI from "openai";
import { type RedisKeys, redisKeys } from "../../shared/redis-keys.ts";
import { type WorkerHeartbeat, WorkerHeartbeatSchema } from "../../shared/protocol.ts";
import { bootstrapTenant } from "../../gateway/tenancy/bootstrap.ts";
import type { TenantSettings } from "../../gateway/tenancy/schemas.ts";
import { eventually } from "./eventually.ts";
import type { ReplyRule } from "./scripted-worker.ts";
import { parsePrometheusText, sampleSum } from "./prometheus-text.ts";
import {
  deleteKeysUnder,
  freePort,
  type ManagedProcess,
  redisAnswers,
  ROOT,
  type StartedGateway,
  startGateway,
  startRedisServer,
  startWorker,
  waitUntilReady,
  workerMetricsUrl,
} from "../../scripts/lib/local-stack.ts";

/**
 * A stack that is already running elsewhere, named by STACK_* variables:
 * bench/stack/main.ts (scripts/gpu-stack.sh) sets them to run the suites that
 * need no process of their own unchanged against a GPU host's stack.
 */
interface ExternalStack {
  url: string;
  apiKey: string;
  model: string;
  redisUrl: string;
  prefix: string;
  metricsUrl: string;
  workerMetricsUrls: string[];
}

function externalStackFromEnv(): ExternalStack | undefined {
  if (!process.env.STACK_URL) return undefined;
  const need = (name: string) => {
    const value = process.env[name];
    if (!value) throw new Error(`STACK_URL is set, so ${name} must be too`);
    return value;
  };
  return {
    url: need("STACK_URL"),
    apiKey: need("STACK_API_KEY"),
    model: need("STACK_MODEL"),
    redisUrl: need("STACK_REDIS_URL"),
    prefix: need("STACK_REDIS_PREFIX"),
    metricsUrl: need("STACK_METRICS_URL"),
    workerMetricsUrls: need("STACK_WORKER_METRICS_URLS").split(","),
  };
}

const EXTERNAL = externalStackFromEnv();

/** The suites run against an external stack: those needing processes of their own skip. */
export const EXTERNAL_STACK = EXTERNAL !== undefined;

export const MODEL_NAME = EXTERNAL?.model ?? "gpt-oss-tiny";
export const MODEL_DIR = `${ROOT}.models/tiny`;
const ADDON = `${ROOT}native/build/gptoss_node.node`;

/** Limits far above what any test sends. */
const UNLIMITED_TENANT: Partial<TenantSettings> = {
  requestsPerMinute: 1_000_000,
  tokensPerMinute: 1_000_000_000,
  concurrentRequests: 10_000,
};

export interface StackOptions {
  /**
   * Start a private redis-server on a free port even when the shared one
   * answers (tests that kill Redis). It keeps its data in an append-only file
   * in a temporary folder, so `stopRedis` and starting it again keep every key.
   */
  ownRedis?: boolean;
  workers?: number;
  /** Extra environment for the gateway (e.g. KEEPALIVE_MS). */
  gatewayEnv?: Record<string, string>;
  /** Extra environment for every worker. */
  workerEnv?: Record<string, string>;
  /**
   * Workers whose engine plays these replies instead of running the tiny model
   * (tests/helpers/scripted-worker.ts): flows a random model never takes.
   */
  scriptedReplies?: ReplyRule[];
  /** Settings of the test tenant; by default its limits stay out of the way of load tests. */
  tenantSettings?: Partial<TenantSettings>;
  /** Copy the processes' output to stdout (debugging). */
  echo?: boolean;
}

export interface Stack {
  /** Gateway origin, e.g. http://127.0.0.1:41234. */
  url: string;
  /** The gateway's /metrics (its own port, out of tenants' reach). */
  metricsUrl: string;
  /** OpenAI base URL (`${url}/v1`). */
  baseURL: string;
  apiKey: string;
  prefix: string;
  keys: RedisKeys;
  redisUrl: string;
  /** A command connection to the stack's Redis, for assertions. */
  redis: Redis;
  gateway: ManagedProcess;
  workers: ManagedProcess[];
  /** The private redis-server, when one was started (the current one after `stopRedis` and a restart). */
  redisServer: ManagedProcess | undefined;
  /**
   * Stops the private redis-server with `signal`; the returned function starts
   * it again on the same port with the same data and resolves once it accepts
   * connections.
   */
  stopRedis(signal?: NodeJS.Signals): Promise<() => Promise<void>>;
  /** An `openai` client for this stack (no retries, so errors surface as they are). */
  client(options?: { apiKey?: string; timeout?: number }): OpenAI;
  /** Starts one more worker. */
  addWorker(env?: Record<string, string>): Promise<ManagedProcess>;
  /** Starts one more gateway on the same Redis and prefix (multi-gateway tests); resolves once it is ready. */
  addGateway(env?: Record<string, string>): Promise<StartedGateway>;
  /** The workers' current heartbeats (engine stats included). */
  heartbeats(): Promise<WorkerHeartbeat[]>;
  /** Each worker's /metrics URL. */
  workerMetricsUrls(): Promise<string[]>;
  /** The worker process whose heartbeat carries `workerId`. */
  workerById(workerId: string): ManagedProcess;
  /** The worker whose heartbeat reports a running request (waits up to 5 s for one). */
  busyWorker(): Promise<ManagedProcess>;
  stop(): Promise<void>;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  if (EXTERNAL) {
    if (Object.keys(options).length > 0) {
      throw new Error(`this suite starts processes of its own (${Object.keys(options).join(", ")}): it cannot run against STACK_URL`);
    }
    return externalStack(EXTERNAL);
  }
  if (!existsSync(ADDON) || !existsSync(`${MODEL_DIR}/config.json`)) {
    throw new Error(
      "the native engine or the tiny model is missing: run `node scripts/build-native.mjs && node scripts/tiny-model.mjs` (npm test does)",
    );
  }
  const prefix = `test-e2e-${randomBytes(4).toString("hex")}`;
  const started: ManagedProcess[] = [];
  let redisServer: ManagedProcess | undefined;
  let redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
  let redisPort = 0;
  let redisDataDir: string | undefined;
  const startOwnRedis = async () => {
    const own = await startRedisServer({
      port: redisPort,
      dataDir: redisDataDir,
      appendOnly: true,
      echo: options.echo,
    });
    redisServer = own.process;
    redisUrl = own.url;
  };
  if (options.ownRedis || !(await redisAnswers(redisUrl))) {
    redisPort = await freePort();
    redisDataDir = mkdtempSync(join(tmpdir(), "stack-redis-"));
    await startOwnRedis();
  }
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  redis.on("error", () => {/* a test that stops Redis expects this */});
  const keys = redisKeys(prefix);

  const stopAll = async () => {
    await Promise.all(started.map((p) => p.stop()));
    if (redisDataDir !== undefined) {
      await redisServer?.stop();
      rmSync(redisDataDir, { recursive: true, force: true });
    } else {
      await deleteKeysUnder(redis, prefix);
    }
    redis.disconnect();
  };

  try {
    const { apiKey } = await bootstrapTenant(redis, prefix, {
      tenantId: "e2e",
      settings: options.tenantSettings ?? UNLIMITED_TENANT,
    });
    const gateway = await startGateway({ redisUrl, prefix, port: 0, env: options.gatewayEnv, echo: options.echo });
    started.push(gateway.process);
    const workerOptions = (env: Record<string, string> = {}, index: number) => ({
      redisUrl,
      prefix,
      modelDir: MODEL_DIR,
      modelName: MODEL_NAME,
      // The id names the process in heartbeats, so a test can find the worker running a request.
      env: { HEARTBEAT_MS: "200", WORKER_ID: `worker-${index}`, ...options.workerEnv, ...env },
      echo: options.echo,
      name: `worker-${index}`,
      ...(options.scriptedReplies
        ? { args: ["--import", "tsx", "tests/helpers/scripted-worker.ts", JSON.stringify(options.scriptedReplies)] }
        : {}),
    });
    const workers = await Promise.all(
      Array.from({ length: options.workers ?? 1 }, (_, i) => startWorker(workerOptions({}, i))),
    );
    started.push(...workers);
    await waitUntilReady(gateway.url, 30_000);

    return {
      url: gateway.url,
      metricsUrl: gateway.metricsUrl,
      baseURL: `${gateway.url}/v1`,
      apiKey,
      prefix,
      keys,
      redisUrl,
      redis,
      gateway: gateway.process,
      workers,
      get redisServer() {
        return redisServer;
      },
      async stopRedis(signal = "SIGKILL") {
        if (redisDataDir === undefined) {
          throw new Error("stopRedis needs a stack started with ownRedis");
        }
        await redisServer?.stop(signal);
        return startOwnRedis;
      },
      client: (o = {}) =>
        new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: o.apiKey ?? apiKey, maxRetries: 0, timeout: o.timeout ?? 60_000 }),
      async addGateway(env = {}) {
        const extra = await startGateway({ redisUrl, prefix, port: 0, env: { ...options.gatewayEnv, ...env }, echo: options.echo });
        started.push(extra.process);
        await waitUntilReady(extra.url, 30_000);
        return extra;
      },
      async addWorker(env) {
        const worker = await startWorker(workerOptions(env, workers.length));
        workers.push(worker);
        started.push(worker);
        return worker;
      },
      workerById(workerId) {
        const worker = workers.find((w) => w.name === workerId);
        if (!worker) throw new Error(`no worker ${workerId} in this stack`);
        return worker;
      },
      async busyWorker() {
        let id: string | undefined;
        await eventually("a worker reports a running request", 5_000, async () => {
          id = (await this.heartbeats()).find((h) => h.running > 0)?.workerId;
          return id !== undefined;
        });
        return this.workerById(id!);
      },
      heartbeats: () => readHeartbeats(redis, keys),
      workerMetricsUrls: () => Promise.all(workers.map(workerMetricsUrl)),
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** The Stack view of an external stack: what needs its processes throws. */
function externalStack(ext: ExternalStack): Stack {
  const redis = new Redis(ext.redisUrl, { maxRetriesPerRequest: 1 });
  const keys = redisKeys(ext.prefix);
  const unavailable = (what: string): never => {
    throw new Error(`${what} is not available against an external stack (STACK_URL)`);
  };
  return {
    url: ext.url,
    metricsUrl: ext.metricsUrl,
    baseURL: `${ext.url}/v1`,
    apiKey: ext.apiKey,
    prefix: ext.prefix,
    keys,
    redisUrl: ext.redisUrl,
    redis,
    get gateway() {
      return unavailable("the gateway process");
    },
    get workers() {
      return unavailable("the worker processes");
    },
    redisServer: undefined,
    stopRedis: () => unavailable("stopRedis"),
    client: (o = {}) =>
      new OpenAI({ baseURL: `${ext.url}/v1`, apiKey: o.apiKey ?? ext.apiKey, maxRetries: 0, timeout: o.timeout ?? 120_000 }),
    addWorker: () => unavailable("addWorker"),
    addGateway: () => unavailable("addGateway"),
    heartbeats: () => readHeartbeats(redis, keys),
    workerMetricsUrls: () => Promise.resolve(ext.workerMetricsUrls),
    workerById: () => unavailable("workerById"),
    busyWorker: () => unavailable("busyWorker"),
    async stop() {
      redis.disconnect();
    },
  };
}

async function readHeartbeats(redis: Redis, keys: RedisKeys): Promise<WorkerHeartbeat[]> {
  const ids = await redis.zrange(keys.workers, 0, -1);
  const records = ids.length > 0 ? await redis.mget(ids.map((id) => keys.worker(id))) : [];
  return records.flatMap((r) => r === null ? [] : [WorkerHeartbeatSchema.parse(JSON.parse(r))]);
}

/**
 * For a node:test suite: starts a stack before its first test and stops it
 * after its last. Read `stack` and `client` inside the tests.
 */
export function stackForSuite(options: StackOptions = {}): { readonly stack: Stack; readonly client: OpenAI } {
  let stack: Stack | undefined;
  let client: OpenAI | undefined;
  before(async () => {
    stack = await startStack(options);
    client = stack.client();
  });
  after(async () => await stack?.stop());
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the suite's stack is not running: use it inside a test");
    return value;
  };
  return {
    get stack() {
      return started(stack);
    },
    get client() {
      return started(client);
    },
  };
}

/** Requests the gateway still listens for (its `gateway_event_listeners` gauge): 0 once none leaked. */
export async function gatewayEventListeners(stack: Pick<Stack, "metricsUrl">): Promise<number> {
  const response = await fetch(stack.metricsUrl);
  return sampleSum(parsePrometheusText(await response.text()), "gateway_event_listeners");
}
