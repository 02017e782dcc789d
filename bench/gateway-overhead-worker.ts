/**
 * The bench's worker: speaks the real protocol (BullMQ job in, seq-numbered
 * start/delta/done events out, JobResult returned, heartbeat in the workers
 * set) but has no engine: it publishes the first token the moment it takes a
 * job, then one token every BENCH_TOKEN_INTERVAL_MS until the job's
 * max_tokens, like a decoding sequence, and stops when the gateway cancels. The engine's own time to first token
 * is therefore zero, and a client's time to first token through the gateway is
 * exactly what the gateway, the Redis queue and pub/sub add, while the other
 * streams keep the relay busy. With BENCH_TOKEN_INTERVAL_MS=0 (an infinitely
 * fast engine) every event of the job goes out in one pipeline, one PUBLISH
 * per token, with no timer between them: even `setTimeout(0)` waits ≥ 1 ms in
 * Node, which would make the bench measure the timer instead of the stack.
 * Started by gateway-overhead.ts and gateway-vs-peer.ts; env: REDIS_URL,
 * REDIS_PREFIX, BENCH_MODEL, BENCH_TOKEN_INTERVAL_MS.
 */
import { Worker } from "bullmq";
import { Redis } from "ioredis";
import type { Job, JobResult } from "../shared/protocol.ts";
import { redisKeys } from "../shared/redis-keys.ts";
import { batchRedisWrites } from "../shared/redis-write-batching.ts";

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const keys = redisKeys(process.env.REDIS_PREFIX ?? "bench");
const model = process.env.BENCH_MODEL ?? "bench-instant";
const workerId = `bench-instant-${process.pid}`;
const tokenIntervalMs = Number(process.env.BENCH_TOKEN_INTERVAL_MS ?? 20);
const HEARTBEAT_MS = 1000;

// Connections set up as the real worker's (worker/worker-process.ts): writes batched per turn.
const redis = batchRedisWrites(new Redis(redisUrl, { maxRetriesPerRequest: null }));

async function heartbeat(): Promise<void> {
  const at = Date.now();
  await redis.multi()
    .zadd(keys.workers, at, workerId)
    .set(keys.worker(workerId), JSON.stringify({
      workerId,
      model,
      maxModelLen: 4096,
      backend: "none",
      running: 0,
      waiting: 0,
      kvBlocksUsed: 0,
      kvBlocksTotal: 0,
      at,
    }), "PX", 3 * HEARTBEAT_MS)
    .exec();
}
await heartbeat();
const beat = setInterval(() => void heartbeat(), HEARTBEAT_MS);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Request ids the gateway cancelled (clients that left): their streams stop at the next token. */
const cancelled = new Set<string>();
const cancels = redis.duplicate();
cancels.on("message", (_channel: string, requestId: string) => cancelled.add(requestId));
await cancels.subscribe(keys.cancelChannel);

const worker = new Worker<Job, JobResult>(keys.queueName, async (bullJob) => {
  const job = bullJob.data;
  const channel = keys.eventChannel(job.gatewayId, job.requestId);
  const tokens = job.sampling.maxTokens;
  const usage = { promptTokens: job.promptTokenIds.length, completionTokens: tokens };
  let seq = 0;
  const event = (body: object) => JSON.stringify({ seq: seq++, ...body });
  const delta = (n: number) => event({ type: "delta", content: "ok ", reasoning: "", tokens: n });
  if (tokenIntervalMs === 0) {
    const all = redis.pipeline().publish(channel, event({ type: "start", workerId }));
    for (let n = 1; n <= tokens; n++) all.publish(channel, delta(n));
    await all.publish(channel, event({ type: "done", finishReason: "length", usage })).exec();
    return { content: "ok ".repeat(tokens), reasoning: "", finishReason: "length", usage };
  }
  await redis.multi().publish(channel, event({ type: "start", workerId })).publish(channel, delta(1)).exec();
  for (let n = 2; n <= tokens; n++) {
    await sleep(tokenIntervalMs);
    if (cancelled.delete(job.requestId)) {
      await redis.publish(channel, event({ type: "done", finishReason: "cancelled", usage: { ...usage, completionTokens: n - 1 } }));
      return { content: "ok ".repeat(n - 1), reasoning: "", finishReason: "cancelled", usage: { ...usage, completionTokens: n - 1 } };
    }
    await redis.publish(channel, delta(n));
  }
  await redis.publish(channel, event({ type: "done", finishReason: "length", usage }));
  return { content: "ok ".repeat(tokens), reasoning: "", finishReason: "length", usage };
}, { connection: batchRedisWrites(redis.duplicate()), prefix: keys.bullPrefix, concurrency: 1024 });
await worker.waitUntilReady();
console.log("bench worker ready");

process.once("SIGTERM", async () => {
  clearInterval(beat);
  await worker.close();
  cancels.disconnect();
  await redis.multi().zrem(keys.workers, workerId).del(keys.worker(workerId)).exec();
  redis.disconnect();
  process.exit(0);
});
