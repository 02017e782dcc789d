/**
 * The Hono environment of the gateway: the variables each middleware adds to
 * the request context, in chain order. A middleware reads only what an earlier
 * one set, so the chain's order is visible in this one type.
 */
import type { GenerationRequest } from "./schemas/generation.ts";
import type { RequestEnd } from "./request-end.ts";
import type { Logger } from "../shared/log.ts";
import type { TenancyVariables } from "./tenancy/context.ts";
import type { SafetyVariables } from "./safety/context.ts";
import type { EventSubscription } from "./relay/subscription.ts";
import type { Reservation } from "./queue/job-queue.ts";
import type { Timeline } from "../shared/timeline.ts";
import type { ServedModel } from "./workers/registry.ts";

/** The prompt as the model will see it, checked against the model's context length. */
export interface PreparedPrompt {
  tokenIds: number[];
  /** Completion budget: requested max_tokens, or what the context leaves (capped). */
  maxTokens: number;
  maxModelLen: number;
}

export interface GatewayVariables {
  /** Set by request-id: also the job id and the event channel's name. */
  requestId: string;
  /** Set by request-id: performance.now() when the request arrived (latency and TTFT start here). */
  receivedAt: number;
  /** Set by request-log: the logger bound to this request's id. */
  log: Logger;
  /** Set by request-id: fires once when the request is over (response sent or stream ended). */
  requestEnd: RequestEnd;
  /** Set by validation. */
  generation: GenerationRequest;
  /** Set by the model lookup step: the request's model as its workers report it, being read. */
  servedModel: Promise<ServedModel>;
  /** Set by the subscription step: the request's event stream, being opened. */
  events: EventSubscription;
  /** Set by the reservation step: the request's place in the queue, being reserved. */
  queuePlace: { place: Promise<Reservation>; at: number; release(): void };
  /**
   * Set by a step that leaves part of its check until the job is enqueued (the input filter's
   * injection detectors: they change nothing the model is sent, so they run while the worker
   * fetches the job). Generation.start runs it right after the enqueue, before anything is
   * relayed; a throw refuses the request and cancels its job.
   */
  checkAfterEnqueue?: () => void;
  /** Set by the prompt middleware (token count and context check). */
  prompt: PreparedPrompt;
  /** Set by debug-timeline, only for a request that asked for its latency timeline (a bench's). */
  timeline?: Timeline;
}

/**
 * Tenancy's variables: `principal` (set by auth) and `admissionRequest` (set by the prompt step);
 * safety's: `safetyPolicy` (set by the input filter).
 */
export interface AppEnv {
  Variables: GatewayVariables & TenancyVariables & SafetyVariables;
}
