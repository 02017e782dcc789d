/**
 * The gateway's side of the BullMQ queue `generate`: add a job (job id =
 * request id), count what is waiting (admission), and cancel a request
 * wherever it is (still waiting: removed; running: the worker is told).
 */
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Job } from "../../shared/protocol.ts";
import type { RedisKeys } from "../../shared/redis-keys.ts";
import { LuaScript } from "../tenancy/lua-script.ts";

/** A reservation not turned into a job within this long (its gateway died) stops counting. */
const RESERVATION_TTL_MS = 10_000;

/**
 * KEYS: reservations, wait list, prioritized set. ARGV: request id, now, ttl,
 * limit, job key prefix. Counts waiting jobs plus the live reservations whose
 * job does not exist yet (one that does is counted as waiting, or is running),
 * so every request counts exactly once; below the limit, reserves a place for
 * the request and returns -1, else returns the count.
 *
 * Every reservation counted as well, expired ones included, is an upper bound,
 * in O(1); only when that bound reaches the limit are the expired ones purged
 * and the rest checked one by one (O(n): at 256 streams about a hundred
 * requests are between reservation and enqueue, and a check of each on every
 * request was the largest part of Redis's time). Expired reservations are rare
 * (a request gives its place back however it ends), so purging them only then
 * keeps the set bounded by the limit and saves a command on every request; for
 * the same reason the set needs no expiry of its own (its last member given
 * back removes it).
 */
export const RESERVE = new LuaScript(`
local limit = tonumber(ARGV[4])
local waiting = redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3])
local bound = waiting + redis.call('ZCARD', KEYS[1])
if bound >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[5] .. id) == 0 then waiting = waiting + 1 end
  end
  if waiting >= limit then return waiting end
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return -1
`);

/** A place in the queue, or how many wait (the limit is reached). */
export type Reservation = { reserved: true } | { reserved: false; waiting: number };

/** Completed jobs keep their result this long so a client that lost the stream can recover it. */
const KEEP_COMPLETED_S = 300;
const KEEP_FAILED_S = 3600;

export class JobQueue {
  /** How long a reservation counts before its request must be enqueued or reserve again. */
  readonly reservationTtlMs = RESERVATION_TTL_MS;
  readonly #queue: Queue;
  readonly #redis: Redis;
  readonly #keys: RedisKeys;

  /** `redis` is a normal (non-subscriber) connection shared with other gateway parts. */
  constructor(redis: Redis, keys: RedisKeys) {
    this.#redis = redis;
    this.#keys = keys;
    this.#queue = new Queue(keys.queueName, { connection: redis, prefix: keys.bullPrefix });
  }

  /**
   * Adds the job. `priority`: 1 is the highest; absent = plain FIFO. A failed
   * generation is not retried (its stream has ended with an error); a job
   * whose worker died is resumed by BullMQ's stalled-job check instead.
   */
  async enqueue(job: Job, priority?: number): Promise<void> {
    await this.#queue.add("generate", job, {
      jobId: job.requestId,
      priority,
      attempts: 1,
      removeOnComplete: { age: KEEP_COMPLETED_S },
      removeOnFail: { age: KEEP_FAILED_S },
    });
  }

  /**
   * Reserves a place for `requestId` among at most `limit` waiting jobs, in
   * one atomic step, so concurrent admissions (on any number of gateways)
   * can never take the queue past its limit. The caller gives it back with
   * `release` once the job is enqueued (it then counts as waiting) or the
   * request has failed; a place never given back expires.
   */
  async reserve(requestId: string, limit: number): Promise<Reservation> {
    const result = await RESERVE.run(
      this.#redis,
      [this.#keys.queueReservations, this.#queue.keys.wait, this.#queue.keys.prioritized],
      [requestId, Date.now(), RESERVATION_TTL_MS, limit, this.#queue.toKey("")],
    ) as number;
    return result < 0 ? { reserved: true } : { reserved: false, waiting: result };
  }

  /**
   * Gives a reserved place back: once the job is enqueued (it then counts as waiting, and the
   * script no longer counts the reservation: removing it is housekeeping), or when the request
   * failed before that.
   */
  async release(requestId: string): Promise<void> {
    await this.#redis.zrem(this.#keys.queueReservations, requestId);
  }

  /** Jobs not yet taken by a worker. */
  async waitingCount(): Promise<number> {
    return await this.#queue.getJobCountByTypes("waiting", "prioritized");
  }

  /**
   * Cancels `requestId`. The marker covers a job a worker takes right now
   * (checked when it starts); the broadcast reaches the worker running it;
   * removal drops it if it is still waiting, or if the worker that ran it
   * died (a locked, running job stays).
   */
  async cancel(requestId: string, markerTtlMs: number): Promise<void> {
    await this.#redis.multi()
      .set(this.#keys.cancelMarker(requestId), "1", "PX", markerTtlMs)
      .publish(this.#keys.cancelChannel, requestId)
      .exec();
    if ((await this.#queue.remove(requestId)) === 1) {
      // No worker held the job, so none will resume it or delete its stream log.
      await this.#redis.del(this.#keys.streamOwner(requestId), this.#keys.streamLog(requestId));
    }
  }

  async close(): Promise<void> {
    await this.#queue.close();
  }
}
