/**
 * Backpressure before anything is enqueued: 503 with Retry-After when no live
 * worker serves the model, or when QUEUE_MAX_WAITING jobs already wait. The
 * place in the queue is reserved atomically, so a burst of requests cannot
 * overshoot the limit; a request that fails before its job is enqueued gives
 * its place back.
 *
 * Two steps: `reserveQueuePlace` sends the reservation as soon as the request
 * is valid, and `admission`, just before enqueueing, decides on the answer,
 * which has arrived meanwhile (safety, token counting and rate limits ran in
 * between): one Redis round trip fewer on the way to the first token. A
 * request refused on the way held a place for that long and gives it back.
 */
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { GatewayError, needingRedis } from "../errors.ts";
import type { JobQueue } from "../queue/job-queue.ts";
import type { WorkerRegistry } from "../workers/registry.ts";

export interface ReserveOptions {
  queue: JobQueue;
  maxWaiting: number;
}

export interface AdmissionOptions extends ReserveOptions {
  registry: WorkerRegistry;
}

/**
 * Starts reserving the request's place (`c.var.queuePlace`). The place is given back once, by
 * whoever comes first: Generation.start right after enqueueing, or this step when the request
 * ends without a job.
 */
export function reserveQueuePlace(options: ReserveOptions) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const requestId = c.var.requestId;
    const place = options.queue.reserve(requestId, options.maxWaiting);
    place.catch(() => {/* a request refused earlier never asks; admission reports it */});
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      void options.queue.release(requestId).catch(() => {/* it expires on its own */});
    };
    c.set("queuePlace", { place, at: Date.now(), release });
    try {
      await next();
    } finally {
      // Once enqueued the job counts as waiting and Generation.start has released the place;
      // this covers a request that failed first.
      release();
    }
  });
}

/** Refuses the request unless a live worker serves its model and its place was reserved. */
export function admission(options: AdmissionOptions) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const model = c.var.generation.model;
    const { models } = await needingRedis(() => options.registry.snapshot());
    if ((models.get(model)?.liveWorkers ?? 0) === 0) {
      throw new GatewayError({ reason: "no_worker", model });
    }
    const { requestId, queuePlace } = c.var;
    // A request that waited long for a concurrency slot may have outlived its reservation (which
    // expires, so a dead gateway's places come back): reserve again rather than trust it.
    const stale = Date.now() - queuePlace.at > options.queue.reservationTtlMs / 2;
    const place = await needingRedis(() =>
      stale ? options.queue.reserve(requestId, options.maxWaiting) : queuePlace.place
    );
    if (!place.reserved) {
      throw new GatewayError({
        reason: "queue_full",
        waiting: place.waiting,
        limit: options.maxWaiting,
      });
    }
    await next();
  });
}
