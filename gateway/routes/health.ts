/**
 * Probes. /healthz: the process answers. /readyz: Redis answers, the gateway's
 * event subscription stands and at least one worker's heartbeat is fresh, i.e.
 * a request sent now can be served.
 */
import { Hono } from "hono";
import type { Redis } from "ioredis";
import type { AppEnv } from "../env.ts";
import type { WorkerRegistry } from "../workers/registry.ts";
import type { EventHub } from "../relay/event-hub.ts";

export function healthRoutes(redis: Redis, registry: WorkerRegistry, hub: Pick<EventHub, "listening">) {
  return new Hono<AppEnv>()
    .get("/healthz", (c) => c.json({ status: "ok" }))
    .get("/readyz", async (c) => {
      let redisUp = false;
      let liveWorkers = 0;
      try {
        redisUp = (await redis.ping()) === "PONG";
        liveWorkers = (await registry.refresh()).liveWorkers;
      } catch {
        // Reported below as not ready.
      }
      const events = hub.listening;
      const ready = redisUp && events && liveWorkers > 0;
      return c.json(
        { status: ready ? "ready" : "not ready", redis: redisUp, events, live_workers: liveWorkers },
        ready ? 200 : 503,
      );
    });
}
