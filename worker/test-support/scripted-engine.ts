/**
 * An Engine that plays back a token script, one token per step on a timer,
 * honouring stop tokens, maxTokens, cancel and close like the native engine's
 * contract says. It lets the job processor's timing-dependent paths (stop
 * strings, cancels, deadlines) be tested in milliseconds, and end-to-end tests
 * steer a reply the tiny random model would never write (a function call): the
 * script may be chosen per request from its prompt. The real engine is
 * exercised end to end in worker.integration.test.ts.
 */
import type {
  Engine,
  EngineError,
  EngineSampling,
  EngineStats,
  EngineTokenEvent,
  ModelInfo,
} from "../../native/node/types.ts";

interface Running {
  timer: NodeJS.Timeout;
  emit: (events: EngineTokenEvent[]) => void;
}

export class ScriptedEngine implements Engine {
  readonly modelInfo: ModelInfo;
  readonly submitted: { prompt: number[]; sampling: EngineSampling; fairnessKey?: string; cacheSalt?: string }[] = [];
  /** Prompt tokens every request reports as found in the prefix cache. */
  cachedTokens = 0;
  readonly #script: (prompt: readonly number[]) => readonly number[];
  readonly #stepMs: number;
  readonly #running = new Map<number, Running>();
  #nextId = 1;

  /** `script`: the tokens every request gets, or a function of the request's prompt. */
  constructor(
    script: readonly number[] | ((prompt: readonly number[]) => readonly number[]),
    stepMs = 1,
    maxModelLen = 64,
  ) {
    this.#script = typeof script === "function" ? script : () => script;
    this.#stepMs = stepMs;
    this.modelInfo = { vocabSize: 201088, maxModelLen, numLayers: 1, hiddenSize: 8, weightBytes: 0 };
  }

  submit(
    promptTokenIds: ArrayLike<number>,
    sampling: EngineSampling,
    onEvents: (events: EngineTokenEvent[]) => void,
    fairnessKey?: string,
    cacheSalt?: string,
  ): number {
    if (promptTokenIds.length >= this.modelInfo.maxModelLen) {
      throw Object.assign(new Error("prompt is longer than the model's context"), {
        code: "context_length",
      }) as EngineError;
    }
    this.submitted.push({
      prompt: Array.from(promptTokenIds),
      sampling,
      ...(fairnessKey ? { fairnessKey } : {}),
      ...(cacheSalt ? { cacheSalt } : {}),
    });
    const id = this.#nextId++;
    const script = this.#script(this.submitted.at(-1)!.prompt);
    let step = 0;
    const tick = () => {
      const token = script[step++];
      const event: EngineTokenEvent = {
        token,
        ...(sampling.topLogprobs >= 0 ? { logprob: -1, top: [] } : {}),
        ...(this.cachedTokens > 0 ? { cachedTokens: this.cachedTokens } : {}),
      };
      if (sampling.stopTokenIds.includes(token)) event.finish = "stop";
      else if (step >= sampling.maxTokens || step >= script.length) event.finish = "length";
      if (event.finish) this.#running.delete(id);
      else this.#running.get(id)!.timer = setTimeout(tick, this.#stepMs);
      onEvents([event]);
    };
    this.#running.set(id, { timer: setTimeout(tick, this.#stepMs), emit: onEvents });
    return id;
  }

  /** Masks handed over, in order: the script ignores them. */
  readonly masks: { id: number; position: number }[] = [];

  setTokenMask(id: number, position: number): void {
    this.masks.push({ id, position });
  }

  cancel(id: number): boolean {
    const running = this.#running.get(id);
    if (!running) return false;
    clearTimeout(running.timer);
    this.#running.delete(id);
    setImmediate(() => running.emit([{ token: -1, finish: "cancelled" }]));
    return true;
  }

  stats(): EngineStats {
    return {
      running: this.#running.size,
      waiting: 0,
      kvBlocksUsed: this.#running.size,
      kvBlocksTotal: 8,
      tokensGenerated: 0,
      promptTokensProcessed: 0,
      steps: 0,
      lastBatchSize: 0,
      deviceMemoryUsed: 0,
      deviceMemoryTotal: 0,
      prefixCacheQueriedTokens: 0,
      prefixCacheHitTokens: 0,
      prefixCacheBlocks: 0,
      prefixCacheEvictions: 0,
      tokenMaskDeferrals: 0,
    };
  }

  close(): Promise<void> {
    for (const id of [...this.#running.keys()]) this.cancel(id);
    return Promise.resolve();
  }
}
