/**
 * The first step of a generation, taken as soon as the request is valid: route the request's
 * events to its stream (gateway/relay/event-hub.ts). The gateway's one pattern subscription
 * already covers the request's channel, so this costs no command; only while the subscriber
 * connection is coming back does the stream wait for the pattern's confirmation, and that wait
 * overlaps the rest of the chain (safety, token count, rate limits, admission).
 *
 * Generation.start takes the stream over and awaits it before enqueueing (nothing may be
 * published before someone listens). A request that fails before that point stops listening on
 * its way out.
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import type { Failure } from "../errors.ts";
import type { WorkerRegistry } from "../workers/registry.ts";
import type { EventHub } from "./event-hub.ts";
import { RequestEventStream } from "./event-stream.ts";

/** How often a queued request checks that some worker can still take it. */
const QUEUED_CHECK_MS = 1_000;

export interface SubscriptionDeps {
  hub: EventHub;
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

  /**
   * `deadline`: epoch ms by which the whole request must be done; `gatewayId`: the process whose
   * channels carry the request's events. The job carries both.
   */
  constructor(
    readonly deadline: number,
    readonly gatewayId: string,
    private readonly opening: Promise<RequestEventStream>,
  ) {
    // A request that fails first never awaits it; its failure is then nobody's to report.
    opening.catch(() => {});
  }

  /** The stream, once its events reach it; the caller now owns (closes) it. */
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

/** Opens the request's event stream (`c.var.events`) and closes it if the request ends before using it. */
export function subscribeEvents(deps: SubscriptionDeps) {
  return createMiddleware<AppEnv>(async (c: Context<AppEnv>, next) => {
    const { requestId, generation } = c.var;
    const deadline = Date.now() + deps.requestTimeoutMs;
    const subscription = new EventSubscription(
      deadline,
      deps.hub.gatewayId,
      RequestEventStream.open(deps.hub, requestId, {
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
