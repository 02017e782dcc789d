/**
 * The first step of a generation, taken as soon as the request is valid: subscribe to its event
 * channel while the rest of the chain (safety, token count, rate limits, admission) runs. The
 * SUBSCRIBE round trip goes over the one subscriber connection that also carries every token of
 * every stream, so under load its reply waits behind them; overlapped with the chain, it is off
 * the path to the first token.
 *
 * Generation.start takes the stream over and waits for Redis's confirmation before enqueueing
 * (nothing may be published before someone listens). A request that fails before that point
 * unsubscribes on its way out.
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import type { RedisKeys } from "../../shared/redis-keys.ts";
import type { Failure } from "../errors.ts";
import type { WorkerRegistry } from "../workers/registry.ts";
import type { EventHub } from "./event-hub.ts";
import { RequestEventStream } from "./event-stream.ts";

/** How often a queued request checks that some worker can still take it. */
const QUEUED_CHECK_MS = 1_000;

export interface SubscriptionDeps {
  hub: EventHub;
  keys: RedisKeys;
  /** Whole-request deadline, queue wait included. */
  requestTimeoutMs: number;
  /** Longest silence from a running worker. */
  idleTimeoutMs: number;
  /** Gives up on a queued request once no worker is left to take it. */
  registry: WorkerRegistry;
}

/** A request's event stream while it is being opened, until Generation.start takes it. */
export class EventSubscription {
  #taken = false;

  /** `deadline`: epoch ms by which the whole request must be done (the job carries it too). */
  constructor(readonly deadline: number, private readonly opening: Promise<RequestEventStream>) {
    // A request that fails first never awaits it; its failure is then nobody's to report.
    opening.catch(() => {});
  }

  /** The stream, once Redis has confirmed the subscription; the caller now owns (closes) it. */
  take(): Promise<RequestEventStream> {
    this.#taken = true;
    return this.opening;
  }

  /** Closes the stream unless it was taken. */
  abandon(): void {
    if (!this.#taken) this.opening.then((stream) => stream.close(), () => {});
  }
}

function noWorkerLeft(registry: WorkerRegistry, model: string): () => Promise<Failure | undefined> {
  const abandoned = registry.abandonedCheck(model);
  return async () => (await abandoned()) ? { reason: "no_worker", model } : undefined;
}

/** Opens the subscription (`c.var.events`) and closes it if the request ends before using it. */
export function subscribeEvents(deps: SubscriptionDeps) {
  return createMiddleware<AppEnv>(async (c: Context<AppEnv>, next) => {
    const { requestId, generation } = c.var;
    const deadline = Date.now() + deps.requestTimeoutMs;
    const subscription = new EventSubscription(
      deadline,
      RequestEventStream.open(deps.hub, deps.keys.eventChannel(requestId), {
        deadline,
        idleTimeoutMs: deps.idleTimeoutMs,
        whileQueued: {
          everyMs: QUEUED_CHECK_MS,
          check: noWorkerLeft(deps.registry, generation.model),
        },
      }),
    );
    c.set("events", subscription);
    try {
      await next();
    } finally {
      subscription.abandon();
    }
  });
}
