/**
 * Sends the Redis commands the chain's early steps issued on the command connection (the model
 * lookup, the queue place) before the input filter runs, so their round trips overlap the filter's
 * CPU as those steps intend. The connection batches its writes until the event-loop turn ends
 * (shared/redis-write-batching.ts), and validation, the filter and the prompt run in one turn:
 * the commands left only once the filter was done, and the prompt step then waited out the
 * lookup's round trip. (A request's event routing sends no command: the gateway's pattern
 * subscription covers its channel, relay/event-hub.ts.)
 */
import { createMiddleware } from "hono/factory";
import type { Redis } from "ioredis";
import type { AppEnv } from "../env.ts";
import { sendBatchedWrites } from "../../shared/redis-write-batching.ts";

export function sendEarlyReads(redis: Redis) {
  return createMiddleware<AppEnv>(async (_c, next) => {
    sendBatchedWrites(redis);
    await next();
  });
}
