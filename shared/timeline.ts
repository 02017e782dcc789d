/**
 * A request's latency timeline, for benches: the moments one streaming request passed each stage
 * of the stack, from the client's send to its first text, in epoch milliseconds with sub-ms
 * precision. The gateway, the worker and the engine run in different processes and threads; all
 * stamp the same host clock (`timelineNow`: the process's time origin plus its monotonic clock),
 * so on one host their stamps compare to a few microseconds.
 *
 * Only a request that asks for it (the `x-debug-timeline: 1` header, streaming) carries one: the
 * job gets `debugTimeline`, the worker sends its stamps back in the `done` event, and the gateway
 * writes the whole timeline as one SSE comment (`: timeline {...}`) before `data: [DONE]`. Comments
 * are ignored by SSE clients; every other request pays nothing.
 */
import { z } from "zod";

export const TIMELINE_HEADER = "x-debug-timeline";
/** The SSE comment that carries a timeline: `: timeline {"received":…,…}`. */
export const TIMELINE_COMMENT_PREFIX = ": timeline ";

/**
 * The stages in the order a request meets them, each with who stamps it. A breakdown is the time
 * from each stage to the next one present.
 */
export const TIMELINE_STAGES = [
  /** client: the request is sent. */
  "sent",
  /** gateway: the first middleware runs. */
  "received",
  /** gateway: the body is parsed and validated. */
  "validated",
  /**
   * gateway: past the steps before the prompt's (the subscription and the queue place started,
   * the input safety filter).
   */
  "filtered",
  /** gateway: the prompt is rendered, tokenized and checked against the context. */
  "prompted",
  /** gateway: Redis confirmed the job (the subscription was confirmed before). */
  "enqueued",
  /** worker: BullMQ handed the job to the processor. */
  "fetched",
  /** worker: the job's payload is validated (JobSchema: a 1 024-token prompt is 1 024 numbers). */
  "parsed",
  /** worker: the stream log is claimed and the cancel marker checked (the last step before the engine). */
  "claimed",
  /** worker: `engine.submit` returned. */
  "submitted",
  /**
   * engine thread: the step whose token made the first text (a harmony header's tokens make
   * none) handed its events over.
   */
  "engineFirstText",
  /** worker: that step's events reached JavaScript. */
  "firstTextDelivered",
  /** worker: the first text's publish was issued to Redis. */
  "firstDeltaPublished",
  /** gateway: the first text event arrived from Redis. */
  "firstEventReceived",
  /** gateway: the first text chunk was handed to the client's socket. */
  "firstWrite",
  /** client: the first text arrived. */
  "firstText",
  /** engine thread: the step that sampled the last token handed its events over. */
  "engineLastToken",
  /** worker: the terminal event's publish was issued. */
  "donePublished",
  /** gateway: the last chunk and [DONE] were handed to the socket. */
  "doneWritten",
  /** client: [DONE] arrived. */
  "doneReceived",
] as const;
export type TimelineStage = typeof TIMELINE_STAGES[number];

export type Timeline = Partial<Record<TimelineStage, number>>;

export const TimelineSchema = z.record(z.enum(TIMELINE_STAGES), z.number()) as z.ZodType<Timeline>;

/** Now, on the clock every process of the host shares: epoch ms with sub-ms precision. */
export function timelineNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A `performance.now()` reading of this process on the shared clock. */
export function timelineAt(performanceNow: number): number {
  return performance.timeOrigin + performanceNow;
}

/**
 * Milliseconds between consecutive stages present in `timeline`, keyed `from→to`, in stage order.
 * A stage stamped out of order (a clock step between processes) still counts, as a negative span.
 */
export function timelineSpans(timeline: Timeline): { span: string; ms: number }[] {
  const present = TIMELINE_STAGES.filter((stage) => timeline[stage] !== undefined);
  return present.slice(1).map((stage, i) => ({
    span: `${present[i]}→${stage}`,
    ms: timeline[stage]! - timeline[present[i]]!,
  }));
}
