/**
 * A bench's request asks for its latency timeline (shared/timeline.ts) with `x-debug-timeline: 1`;
 * this starts it, from the moment the request arrived. The chain stamps its stages on it, the job
 * carries the wish to the worker, and a stream ends with the whole timeline as an SSE comment.
 * Every other request has no timeline and pays one header lookup.
 */
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { TIMELINE_HEADER, timelineAt } from "../../shared/timeline.ts";

export function debugTimeline() {
  return createMiddleware<AppEnv>(async (c, next) => {
    if (c.req.header(TIMELINE_HEADER) === "1") {
      c.set("timeline", { received: timelineAt(c.var.receivedAt) });
    }
    await next();
  });
}
