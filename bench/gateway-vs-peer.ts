/**
 * This stack against a peer gateway, side by side on one machine, one command:
 *
 *   node --import tsx bench/gateway-vs-peer.ts [--quick] [--levels 1,32,256] [--phase-seconds 4]
 *     [--rounds 2] [--tokens 16] [--profile DIR] [--no-peer] [--syscalls] [--scripts]
 *     [--gateway-v8-flags F]
 *
 * Targets, measured in alternating phases so both see the same machine:
 * - "ours": the Deno gateway, a private Redis and a worker whose engine is infinitely fast
 *   (gateway-overhead-worker.ts with BENCH_TOKEN_INTERVAL_MS=0: the whole answer published at
 *   once, one PUBLISH per token);
 * - "peer": the Portkey AI gateway (bench/peer, npm `@portkey-ai/gateway` pinned there with its
 *   own lockfile's hono, installed there on first use) in front of a do-nothing OpenAI-style
 *   upstream (gateway-overhead-floor.ts);
 * - "floor": that upstream alone, the same client straight to it.
 *
 * At each level N, N clients open streaming chat completions back to back (closed loop), each
 * answer `--tokens` content chunks. A phase runs `--phase-seconds`, then lets the streams in
 * flight finish. Per target and level it reports time to first content (p50/p90/p99), "added"
 * = target − floor at p50, requests/s, the CPU each process spent per request (utime + stime
 * from /proc, in core-ms) and, for ours, the Redis commands per request (INFO commandstats).
 * Redis is a private redis-server, so its CPU and commands are this stack's alone. Writes
 * bench/results/gateway-vs-peer.json. Goals (issue 20): at 256 streams ≥ 2× the peer's
 * requests/s, added p50 ≤ 40 ms, gateway + worker + Redis ≤ 0.8 core-ms per request; at 1
 * stream added p50 ≤ 2 ms.
 *
 * `--profile DIR` also profiles the processes after the warm-up: the gateway through its
 * inspector (DIR/gateway.cpuprofile and its allocations, DIR/gateway.heapprofile, both
 * summarized in DIR/gateway.txt; needs
 * `node --experimental-websocket` on Node 20), the worker and the peer with `--cpu-prof`
 * (DIR/worker, DIR/peer). Open the profiles in Chrome DevTools.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { randomBytes } from "node:crypto";
import { Agent, request } from "node:http";
import { Redis } from "ioredis";
import { Queue } from "bullmq";
import { RESERVE } from "../gateway/queue/job-queue.ts";
import { ADMIT, REFRESH_LEASE, SETTLE } from "../gateway/tenancy/rate-limit-scripts.ts";
import { bootstrapTenant } from "../gateway/tenancy/bootstrap.ts";
import {
  DENO,
  freePort,
  type ManagedProcess,
  ROOT,
  spawnManaged,
  startGateway,
  startRedisServer,
  waitUntilReady,
} from "../scripts/lib/local-stack.ts";
import { InspectorProfiler, summarizeHeap, summarizeProfile } from "./inspector-profile.ts";
import { promptOf } from "./load/client.ts";
import { summarize, type Summary } from "./load/stats.ts";

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const quick = process.argv.includes("--quick");
const LEVELS = (flag("--levels") ?? "1,32,256").split(",").map(Number);
const PHASE_MS = Number(flag("--phase-seconds") ?? (quick ? 2 : 4)) * 1000;
const ROUNDS = Number(flag("--rounds") ?? (quick ? 1 : 2));
const TOKENS = Number(flag("--tokens") ?? 16);
const MODEL = "bench-instant";
const PEER_DIR = `${ROOT}bench/peer`;
const PEER_ENTRY = `${PEER_DIR}/node_modules/@portkey-ai/gateway/build/start-server.js`;
const CLOCK_TICKS_PER_S = 100;
const PROFILE_DIR = flag("--profile");
/** `--gateway-v8-flags F`: V8 flags for the gateway (e.g. `--max-semi-space-size=32`). */
const GATEWAY_V8_FLAGS = flag("--gateway-v8-flags");
/** Node's `--cpu-prof` flags for a process named `name`, when profiling. */
/**
 * `--scripts`: splits Redis's EVALSHA calls by script for ours: every command of a phase goes to
 * SLOWLOG (threshold 0), read back after it and grouped by SHA, named from BullMQ's scripts and
 * the gateway's. Logging every command costs Redis time, so CPU figures of such a run are not
 * comparable with a run without it.
 */
const SPLIT_SCRIPTS = process.argv.includes("--scripts");
const nodeProfile = (name: string) =>
  PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}/${name}`] : [];

type TargetName = "ours" | "peer" | "floor";
/** `--no-peer`: ours and the floor only, for A/B runs of this stack's own cost. */
const TARGETS: TargetName[] = process.argv.includes("--no-peer")
  ? ["ours", "floor"]
  : ["ours", "peer", "floor"];

interface HttpTarget {
  name: TargetName;
  url: URL;
  headers: Record<string, string>;
  /** Processes whose CPU this target's requests cost (the client is counted for all). */
  processes: Record<string, number>;
}

/** utime + stime of a process, in ms of one core. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at index 2 = state.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 1000 / CLOCK_TICKS_PER_S;
}

/**
 * `--syscalls`: system calls of each process over a phase, counted by `perf stat` on the
 * raw_syscalls tracepoint (root or perf_event_paranoid <= 1). Unlike CPU time, a count that
 * other load on the machine does not inflate: socket writes, reads and epoll waits per request.
 */
const COUNT_SYSCALLS = process.argv.includes("--syscalls");

function countSyscalls(pid: number): { stop(): Promise<number> } {
  const perf: ChildProcess = spawn(
    "perf",
    ["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", String(pid)],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let report = "";
  perf.stderr!.on("data", (chunk) => report += chunk);
  return {
    stop: () =>
      new Promise((resolve) => {
        perf.once("close", () => resolve(Number(report.split(",")[0]) || NaN));
        perf.kill("SIGINT");
      }),
  };
}

/** Names of the Lua scripts this stack runs, by SHA: BullMQ's (as ioredis defines them) and ours. */
async function scriptNames(redisUrl: string): Promise<Map<string, string>> {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue("names", { connection });
  const client = await queue.client as unknown as { scriptsSet: Record<string, { sha: string }> };
  const names = new Map<string, string>();
  for (const [name, script] of Object.entries(client.scriptsSet)) {
    names.set(script.sha, name.split(":")[0]); // "moveToFinished:5.81.5"
  }
  await queue.close();
  connection.disconnect();
  const ours = { RESERVE, ADMIT, SETTLE, REFRESH_LEASE };
  for (const [name, script] of Object.entries(ours)) names.set(script.sha, `gateway ${name}`);
  return names;
}

/** Starts logging every command: SLOWLOG with no threshold, emptied. */
async function startScriptSplit(redis: Redis): Promise<void> {
  await redis.config("SET", "slowlog-max-len", "2000000");
  await redis.config("SET", "slowlog-log-slower-than", "0");
  await redis.slowlog("RESET");
}

/** EVALSHA calls and their µs since `startScriptSplit`, by script name; logging stops. */
async function stopScriptSplit(
  redis: Redis,
  names: Map<string, string>,
): Promise<Map<string, { calls: number; usec: number }>> {
  await redis.config("SET", "slowlog-log-slower-than", "-1");
  const entries = await redis.slowlog("GET", "-1") as [number, number, number, string[]][];
  const split = new Map<string, { calls: number; usec: number }>();
  for (const [, , usec, args] of entries) {
    if (args[0]?.toLowerCase() !== "evalsha") continue;
    const name = names.get(args[1]) ?? args[1];
    const stat = split.get(name) ?? { calls: 0, usec: 0 };
    stat.calls++;
    stat.usec += usec;
    split.set(name, stat);
  }
  await redis.slowlog("RESET");
  return split;
}

/** Redis commandstats: calls and usec per command. */
async function commandStats(redis: Redis): Promise<Map<string, { calls: number; usec: number }>> {
  const info = await redis.info("commandstats");
  const stats = new Map<string, { calls: number; usec: number }>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats.set(m[1], { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return stats;
}

const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
const CONTENT = /"content":"[^"]/;

interface StreamOutcome {
  ttftMs?: number;
  ok: boolean;
}

/**
 * One streaming chat completion over plain node:http (the client shares the two cores with
 * what it measures, so it parses nothing but what it must): time to the first non-empty
 * content, and ok when the body holds `tokens` content chunks and ends with [DONE].
 */
function stream(target: HttpTarget, salt: number): Promise<StreamOutcome> {
  const body = JSON.stringify({
    model: MODEL,
    messages: [{ role: "user", content: promptOf(20, salt) }],
    max_tokens: TOKENS,
    stream: true,
  });
  const started = performance.now();
  return new Promise((resolve) => {
    const req = request(target.url, {
      method: "POST",
      agent,
      headers: {
        ...target.headers,
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      },
    }, (res) => {
      let text = "";
      let ttftMs: number | undefined;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
        if (ttftMs === undefined && CONTENT.test(text)) ttftMs = performance.now() - started;
      });
      res.on("end", () => {
        const chunks = text.split('"content":"ok').length - 1;
        resolve({
          ttftMs,
          ok: res.statusCode === 200 && chunks === TOKENS &&
            text.trimEnd().endsWith("data: [DONE]"),
        });
      });
      res.on("error", () => resolve({ ok: false }));
    });
    req.on("error", () => resolve({ ok: false }));
    req.end(body);
  });
}

interface Phase {
  ttfts: number[];
  requests: number;
  errors: number;
  seconds: number;
  cpuMs: Record<string, number>;
  /** With `--syscalls`: system calls per process over the phase. */
  syscalls: Record<string, number>;
  redis?: Map<string, { calls: number; usec: number }>;
  /** With `--scripts`, ours only: EVALSHA calls and µs by script. */
  scripts?: Map<string, { calls: number; usec: number }>;
}

let salt = 0;

/** N clients open streams back to back for PHASE_MS, then the ones in flight finish. */
async function phase(
  target: HttpTarget,
  concurrency: number,
  redis: Redis,
  scripts?: Map<string, string>,
): Promise<Phase> {
  const splitting = scripts !== undefined && target.name === "ours";
  if (splitting) await startScriptSplit(redis);
  const pids = { ...target.processes, client: process.pid };
  const cpuBefore = Object.fromEntries(
    Object.entries(pids).map(([name, pid]) => [name, cpuMs(pid)]),
  );
  const redisBefore = target.name === "ours" ? await commandStats(redis) : undefined;
  const syscallCounters = COUNT_SYSCALLS
    ? Object.entries(pids).map(([name, pid]) => [name, countSyscalls(pid)] as const)
    : [];
  const ttfts: number[] = [];
  let requests = 0;
  let errors = 0;
  const started = performance.now();
  const until = started + PHASE_MS;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      const outcome = await stream(target, salt++);
      if (outcome.ok && outcome.ttftMs !== undefined) {
        ttfts.push(outcome.ttftMs);
        requests++;
      } else errors++;
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  const syscalls: Record<string, number> = {};
  for (const [name, counter] of syscallCounters) syscalls[name] = await counter.stop();
  const cpu = Object.fromEntries(
    Object.entries(pids).map(([name, pid]) => [name, cpuMs(pid) - cpuBefore[name]]),
  );
  let redisDelta: Phase["redis"];
  if (redisBefore) {
    redisDelta = new Map();
    for (const [command, after] of await commandStats(redis)) {
      const before = redisBefore.get(command) ?? { calls: 0, usec: 0 };
      if (after.calls > before.calls) {
        redisDelta.set(command, {
          calls: after.calls - before.calls,
          usec: after.usec - before.usec,
        });
      }
    }
  }
  const split = splitting ? await stopScriptSplit(redis, scripts) : undefined;
  return {
    ttfts,
    requests,
    errors,
    seconds,
    cpuMs: cpu,
    syscalls,
    redis: redisDelta,
    scripts: split,
  };
}

interface TargetResult {
  target: TargetName;
  requests: number;
  errors: number;
  requestsPerSecond: number;
  ttftMs: Summary;
  /** Core-ms per completed request, per process. */
  cpuMsPerRequest: Record<string, number>;
  /** With `--syscalls`: system calls per completed request, per process. */
  syscallsPerRequest: Record<string, number>;
  /**
   * Ours only, per request by command (the bench's own INFO excluded): calls, and µs of Redis time.
   * Commands run inside a Lua script count under their own names too, and in the script's
   * EVALSHA time.
   */
  redisPerRequest?: Record<string, { calls: number; usec: number }>;
  /** With `--scripts`: EVALSHA calls and µs per request, by script. */
  scriptsPerRequest?: Record<string, { calls: number; usec: number }>;
}

function combine(target: TargetName, phases: Phase[]): TargetResult {
  const requests = phases.reduce((n, p) => n + p.requests, 0);
  const seconds = phases.reduce((n, p) => n + p.seconds, 0);
  const perRequest = (counts: (p: Phase) => Record<string, number>) => {
    const sums: Record<string, number> = {};
    for (const p of phases) {
      for (const [name, n] of Object.entries(counts(p))) {
        sums[name] = (sums[name] ?? 0) + n / requests;
      }
    }
    return sums;
  };
  const cpuMsPerRequest = perRequest((p) => p.cpuMs);
  const result: TargetResult = {
    target,
    requests,
    errors: phases.reduce((n, p) => n + p.errors, 0),
    requestsPerSecond: requests / seconds,
    ttftMs: summarize(phases.flatMap((p) => p.ttfts)),
    cpuMsPerRequest,
    syscallsPerRequest: perRequest((p) => p.syscalls),
  };
  type Stats = Map<string, { calls: number; usec: number }>;
  /** Calls and µs per completed request, by name, summed over the phases. */
  const statsPerRequest = (stats: (p: Phase) => Stats) => {
    const perRequest: Record<string, { calls: number; usec: number }> = {};
    for (const p of phases) {
      for (const [name, stat] of stats(p)) {
        if (name === "info") continue; // the bench's own
        perRequest[name] ??= { calls: 0, usec: 0 };
        perRequest[name].calls += stat.calls / requests;
        perRequest[name].usec += stat.usec / requests;
      }
    }
    return perRequest;
  };
  if (phases[0].redis) result.redisPerRequest = statsPerRequest((p) => p.redis!);
  if (phases[0].scripts) result.scriptsPerRequest = statsPerRequest((p) => p.scripts!);
  return result;
}

/** Installs the peer from its lockfile the first time (its own node_modules, outside the project's). */
function ensurePeerInstalled(): void {
  if (existsSync(PEER_ENTRY)) return;
  console.log("installing the peer gateway (bench/peer, npm ci)...");
  const npm = spawnSync("npm", ["ci", "--ignore-scripts", "--no-audit", "--no-fund"], {
    cwd: PEER_DIR,
    stdio: "inherit",
  });
  if (npm.status !== 0) throw new Error("npm ci in bench/peer failed");
}

const fmt = (n: number, digits = 2) => n.toFixed(digits).padStart(8);

async function main() {
  if (TARGETS.includes("peer")) ensurePeerInstalled();
  const prefix = `bench-peer-${randomBytes(4).toString("hex")}`;
  const processes: ManagedProcess[] = [];
  try {
    const own = await startRedisServer({ port: await freePort() });
    processes.push(own.process);
    const redis = new Redis(own.url);
    const { apiKey } = await bootstrapTenant(redis, prefix, {
      tenantId: "bench",
      settings: {
        requestsPerMinute: 10_000_000,
        tokensPerMinute: 1_000_000_000,
        concurrentRequests: 100_000,
      },
    });
    const worker = spawnManaged("bench-worker", process.execPath, [
      ...nodeProfile("worker"),
      "--import",
      "tsx",
      "bench/gateway-overhead-worker.ts",
    ], {
      env: {
        ...process.env,
        REDIS_URL: own.url,
        REDIS_PREFIX: prefix,
        BENCH_MODEL: MODEL,
        BENCH_TOKEN_INTERVAL_MS: "0",
      },
    });
    processes.push(worker);
    await worker.waitForLine(/bench worker ready/, 30_000);
    const inspectPort = await freePort();
    const gateway = await startGateway({
      redisUrl: own.url,
      prefix,
      port: 0,
      denoFlags: [
        ...(PROFILE_DIR ? [`--inspect=127.0.0.1:${inspectPort}`] : []),
        ...(GATEWAY_V8_FLAGS ? [`--v8-flags=${GATEWAY_V8_FLAGS}`] : []),
      ],
    });
    processes.push(gateway.process);
    await waitUntilReady(gateway.url, 30_000);
    const floorServer = spawnManaged("floor", DENO, [
      "run",
      "--allow-net",
      "bench/gateway-overhead-floor.ts",
    ], { env: process.env });
    processes.push(floorServer);
    const [, floorPort] = await floorServer.waitForLine(/floor listening on (\d+)/, 30_000);
    const peerPort = await freePort();
    const peer = spawnManaged("peer", process.execPath, [
      ...nodeProfile("peer"),
      PEER_ENTRY,
      `--port=${peerPort}`,
      "--headless",
    ], { env: process.env });
    processes.push(peer);
    await peer.waitForLine(/Ready for connections/, 30_000);

    const pid = (p: ManagedProcess) => p.child.pid!;
    const targets: Record<TargetName, HttpTarget> = {
      ours: {
        name: "ours",
        url: new URL(`${gateway.url}/v1/chat/completions`),
        headers: { authorization: `Bearer ${apiKey}` },
        processes: { gateway: pid(gateway.process), worker: pid(worker), redis: pid(own.process) },
      },
      peer: {
        name: "peer",
        url: new URL(`http://127.0.0.1:${peerPort}/v1/chat/completions`),
        headers: {
          authorization: "Bearer sk-unused",
          "x-portkey-provider": "openai",
          "x-portkey-custom-host": `http://127.0.0.1:${floorPort}/v1`,
        },
        processes: { peer: pid(peer), upstream: pid(floorServer) },
      },
      floor: {
        name: "floor",
        url: new URL(`http://127.0.0.1:${floorPort}/v1/chat/completions`),
        headers: {},
        processes: { upstream: pid(floorServer) },
      },
    };

    const scripts = SPLIT_SCRIPTS ? await scriptNames(own.url) : undefined;
    // Warm-up: JIT, connection pools, the tenant's key cache.
    for (const name of TARGETS) await phase(targets[name], 32, redis);
    const profiler = PROFILE_DIR ? await InspectorProfiler.connect(inspectPort) : undefined;
    await profiler?.start();
    const levels = [];
    for (const concurrency of LEVELS) {
      const phases: Record<TargetName, Phase[]> = { ours: [], peer: [], floor: [] };
      for (let round = 0; round < ROUNDS; round++) {
        for (const name of TARGETS) {
          phases[name].push(await phase(targets[name], concurrency, redis, scripts));
        }
      }
      const results = Object.fromEntries(
        TARGETS.map((name) => [name, combine(name, phases[name])]),
      ) as Record<
        TargetName,
        TargetResult
      >;
      levels.push({
        concurrency,
        ...results,
        addedTtftP50Ms: {
          ours: results.ours.ttftMs.p50 - results.floor.ttftMs.p50,
          peer: (results.peer?.ttftMs.p50 ?? NaN) - results.floor.ttftMs.p50,
        },
      });
    }
    redis.disconnect();
    if (profiler) {
      const { cpu, heap } = await profiler.stop();
      mkdirSync(PROFILE_DIR!, { recursive: true });
      writeFileSync(`${PROFILE_DIR}/gateway.cpuprofile`, JSON.stringify(cpu));
      writeFileSync(`${PROFILE_DIR}/gateway.heapprofile`, JSON.stringify(heap));
      writeFileSync(
        `${PROFILE_DIR}/gateway.txt`,
        `${summarizeProfile(cpu, 40)}\n\n${summarizeHeap(heap, 40)}\n`,
      );
    }

    console.log(
      `\n${TOKENS} content tokens per stream, ${ROUNDS} × ${
        PHASE_MS / 1000
      } s per target and level, load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}`,
    );
    console.log(
      "streams target |  req/s  errors | TTFT p50      p90      p99 | added p50 | core-ms per request",
    );
    for (const level of levels) {
      for (const name of TARGETS) {
        const r = level[name];
        const added = name === "floor" ? "" : fmt(level.addedTtftP50Ms[name]);
        const cpu = Object.entries(r.cpuMsPerRequest).map(([p, ms]) => `${p} ${ms.toFixed(3)}`)
          .join(", ");
        const syscalls = Object.entries(r.syscallsPerRequest).map(([p, n]) =>
          `${p} ${n.toFixed(1)}`
        ).join(", ");
        console.log(
          `${String(level.concurrency).padStart(7)} ${name.padEnd(6)} | ${
            r.requestsPerSecond.toFixed(0).padStart(6)
          } ${String(r.errors).padStart(7)} | ` +
            `${fmt(r.ttftMs.p50)} ${fmt(r.ttftMs.p90)} ${fmt(r.ttftMs.p99)} | ${
              added.padStart(9)
            } | ${cpu}${syscalls ? ` | syscalls per request: ${syscalls}` : ""}`,
        );
      }
      const ours = level.ours;
      const stack = ["gateway", "worker", "redis"].reduce((n, p) => n + ours.cpuMsPerRequest[p], 0);
      const commands = Object.entries(ours.redisPerRequest!).sort((a, b) => b[1].usec - a[1].usec);
      const top = commands.slice(0, 12).map(([command, n]) =>
        `${command} ${n.calls.toFixed(2)} (${n.usec.toFixed(0)} µs)`
      );
      const calls = commands.reduce((n, [, c]) => n + c.calls, 0);
      console.log(
        `        ours: gateway + worker + Redis ${
          stack.toFixed(3)
        } core-ms/request; Redis commands/request ${calls.toFixed(1)} ` +
          `(scripts' inner commands included), by Redis time: ${top.join(", ")}`,
      );
      if (ours.scriptsPerRequest) {
        const split = Object.entries(ours.scriptsPerRequest).sort((a, b) => b[1].usec - a[1].usec)
          .map(([script, n]) => `${script} ${n.calls.toFixed(2)} (${n.usec.toFixed(0)} µs)`);
        console.log(`        ours: EVALSHA per request by script: ${split.join(", ")}`);
      }
    }
    const at = (n: number) => levels.find((l) => l.concurrency === n);
    const goals: Record<string, boolean> = {};
    const top = at(256);
    if (top) {
      const stack = ["gateway", "worker", "redis"].reduce(
        (n, p) => n + top.ours.cpuMsPerRequest[p],
        0,
      );
      if (top.peer) {
        goals["256 streams: requests/s >= 2x peer"] =
          top.ours.requestsPerSecond >= 2 * top.peer.requestsPerSecond;
      }
      goals["256 streams: added TTFT p50 <= 40 ms"] = top.addedTtftP50Ms.ours <= 40;
      goals["256 streams: gateway + worker + Redis <= 0.8 core-ms/request"] = stack <= 0.8;
    }
    const one = at(1);
    if (one) goals["1 stream: added TTFT p50 <= 2 ms"] = one.addedTtftP50Ms.ours <= 2;
    for (const [goal, met] of Object.entries(goals)) {
      console.log(`goal ${goal}: ${met ? "met" : "NOT met"}`);
    }

    mkdirSync(`${ROOT}bench/results`, { recursive: true });
    writeFileSync(
      `${ROOT}bench/results/gateway-vs-peer.json`,
      JSON.stringify(
        {
          bench: "gateway-vs-peer",
          at: new Date().toISOString(),
          machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
          peer: "@portkey-ai/gateway 1.15.2 (bench/peer)",
          tokensPerStream: TOKENS,
          phaseSeconds: PHASE_MS / 1000,
          rounds: ROUNDS,
          loadAverage: loadavg(),
          levels,
          goals,
        },
        null,
        2,
      ),
    );
  } finally {
    for (const p of processes.reverse()) await p.stop();
  }
}

await main();
