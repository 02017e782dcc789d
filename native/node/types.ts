/**
 * The engine as JavaScript sees it. `NativeEngine` (index.ts) implements it over
 * the N-API addon; the worker depends only on this interface.
 */

export interface EngineOptions {
  modelDir: string;
  /** "paced": benches only, computes nothing and takes `paceStepUs` (+ per prompt token) per step. */
  backend: "cpu" | "cuda" | "paced";
  tensorParallel: number;
  /** With tensorParallel > 1: "intermediate" (default) splits every expert's columns, "experts" splits experts whole. */
  moeSharding?: "intermediate" | "experts";
  /** cuda with tensorParallel > 1: "peer" (default) sums partials with the peer-to-peer kernel, "nccl" with NCCL. */
  tpAllReduce?: "peer" | "nccl";
  maxNumSeqs: number;
  maxModelLen: number;
  maxBatchedTokens: number;
  /** KV cache bytes; 0 with cuda = use gpuMemoryUtilization. */
  kvCacheBytes: number;
  gpuMemoryUtilization: number;
  /** CPU threads, 0 = all cores. */
  numThreads: number;
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** How long sampling waits for a constrained request's token mask (default 10000). */
  tokenMaskTimeoutMs?: number;
  /** Reuse the KV of prompt prefixes seen before with the same cache salt (default true). */
  enablePrefixCaching?: boolean;
  /** cuda: kernels chosen without regard to a step's size, so a token's bits never depend on its batch (default false; cpu: always so). */
  batchInvariant?: boolean;
  /** backend "paced": one step, µs (default 4000). */
  paceStepUs?: number;
  /** backend "paced": each prompt token of a step beyond a chunk's first, µs (default 35). */
  pacePrefillUsPerToken?: number;
}

export interface EngineSampling {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  presencePenalty: number;
  frequencyPenalty: number;
  seed?: number;
  maxTokens: number;
  stopTokenIds: number[];
  /** -1: no logprobs; 0..20: chosen token's logprob plus n alternatives. */
  topLogprobs: number;
  /** Every token is sampled among those `Engine.setTokenMask` allows for its position. */
  constrained?: boolean;
}

/** mask_timeout: a constrained request's token mask did not come within the engine's timeout. */
export type EngineFinish = "stop" | "length" | "cancelled" | "error" | "mask_timeout";

export interface EngineTokenEvent {
  /** -1 when the event only carries `finish`. */
  token: number;
  logprob?: number;
  top?: { token: number; logprob: number }[];
  finish?: EngineFinish;
  /** Prompt tokens whose KV came from the prefix cache; absent when none. */
  cachedTokens?: number;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  tokensGenerated: number;
  promptTokensProcessed: number;
  steps: number;
  lastBatchSize: number;
  deviceMemoryUsed: number;
  deviceMemoryTotal: number;
  /** Prompt tokens looked up in the prefix cache, once per request, and how many were found. */
  prefixCacheQueriedTokens: number;
  prefixCacheHitTokens: number;
  /** KV blocks findable in the prefix cache (in use or not), and cached blocks given up for new KV. */
  prefixCacheBlocks: number;
  prefixCacheEvictions: number;
  /** Constrained rows computed again because their token mask came late (the batch went on). */
  tokenMaskDeferrals: number;
}

export interface ModelInfo {
  vocabSize: number;
  maxModelLen: number;
  numLayers: number;
  hiddenSize: number;
  weightBytes: number;
}

/** Error thrown by create/submit; `code` mirrors gptoss_status. */
export interface EngineError extends Error {
  code:
    | "invalid_argument"
    | "model"
    | "context_length"
    | "capacity"
    | "backend"
    | "closed";
}

export type EngineEventsListener = (events: EngineTokenEvent[], stepAt?: number) => void;

export interface Engine {
  readonly modelInfo: ModelInfo;
  /**
   * Queues a request. `onEvents` receives this request's events in batches on
   * the JS thread; the last event carries `finish`. Throws EngineError on
   * invalid input. `stepAt`, where the engine knows it: when its thread handed
   * the step over, on the timeline clock (shared/timeline.ts `timelineNow`).
   */
  submit(
    promptTokenIds: ArrayLike<number>,
    sampling: EngineSampling,
    onEvents: EngineEventsListener,
    fairnessKey?: string,
    /** Only requests with equal salts share cached prompt prefixes: the tenant. */
    cacheSalt?: string,
  ): number;
  /**
   * Constrained decoding: the tokens request `id` may sample as its `position`-th generated token
   * (0 = first), one bit per token id (bit id % 32 of word id / 32). The engine waits for it only
   * when it samples that position, so it is computed while the step before runs. Dropped when the
   * request has ended; throws EngineError ("invalid_argument") on a wrong size or an empty mask.
   */
  setTokenMask(id: number, position: number, mask: Int32Array | Uint32Array): void;
  /** Cancels a waiting or running request; false when it is unknown or done. */
  cancel(id: number): boolean;
  stats(): EngineStats;
  /** Stops the engine; running requests finish as "cancelled". */
  close(): Promise<void>;
}
