/**
 * The closed loop shared by the load tool (through the stack) and the engine
 * bench (the engine alone): `concurrency` clients each send the next request
 * when their last one ends, until `count` requests were sent or the deadline
 * passed. The k-th request sent takes the k-th draw of the length samplers,
 * so two runs with the same seeds send the same lengths in the same order; and
 * it carries the k-th salt of the process, so every request of a run (all
 * levels) has a text of its own, and two runs send the same texts.
 */
import type { RequestOutcome, RequestSpec } from "./client.ts";
import type { Sampler } from "./distribution.ts";

export type SendRequest = (spec: RequestSpec, salt: number) => Promise<RequestOutcome>;

export interface LoopLimits {
  concurrency: number;
  /** Requests to send in all (Infinity: until the deadline). */
  count: number;
  durationSec: number;
  /** How long a client waits after a request ends before it sends its next one (default 0). */
  pauseMs?: number;
}

/** Requests sent by this process, from the first salt on: the next request's salt. */
let sentInProcess = 0;

/**
 * Where this process's salts start: a run that must not send another run's texts (the stack
 * bench's warm-up before its measured run, whose prompts the prefix cache would otherwise serve)
 * starts elsewhere. Call before the first request.
 */
export function startSaltsAt(first: number): void {
  sentInProcess = first;
}

export async function closedLoop(send: SendRequest, limits: LoopLimits, prompt: Sampler, output: Sampler) {
  const outcomes: RequestOutcome[] = [];
  const deadline = performance.now() + limits.durationSec * 1000;
  let sent = 0;
  const pause = () => new Promise((resolve) => setTimeout(resolve, limits.pauseMs));
  const client = async () => {
    for (let first = true; performance.now() < deadline && sent < limits.count; first = false) {
      if (!first && limits.pauseMs) await pause();
      sent++;
      outcomes.push(await send({ promptWords: prompt(), maxTokens: output() }, sentInProcess++));
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: limits.concurrency }, () => client()));
  return { outcomes, elapsedSec: (performance.now() - t0) / 1000 };
}

/** Requests of one level: a fixed number, or `waves` times the concurrency (at least `least`). */
export function levelCount(
  concurrency: number,
  fixed: number | undefined,
  waves: number | undefined,
  least = 8,
): number {
  if (waves !== undefined) return Math.max(least, Math.ceil(waves * concurrency));
  return fixed ?? Infinity;
}
