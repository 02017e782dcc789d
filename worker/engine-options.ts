/** The engine's options from the worker's configuration. */
import type { WorkerConfig } from "../shared/config.ts";
import type { EngineOptions } from "../native/node/types.ts";

export function engineOptions(config: WorkerConfig): EngineOptions {
  return {
    modelDir: config.MODEL_DIR,
    backend: config.ENGINE_BACKEND,
    tensorParallel: config.ENGINE_TP,
    moeSharding: config.ENGINE_MOE_SHARDING,
    tpAllReduce: config.ENGINE_TP_ALL_REDUCE,
    maxNumSeqs: config.ENGINE_MAX_NUM_SEQS,
    maxModelLen: config.ENGINE_MAX_MODEL_LEN,
    maxBatchedTokens: config.ENGINE_MAX_BATCHED_TOKENS,
    kvCacheBytes: config.ENGINE_KV_CACHE_BYTES,
    gpuMemoryUtilization: config.ENGINE_GPU_MEMORY_UTILIZATION,
    numThreads: config.ENGINE_THREADS,
    tokenMaskTimeoutMs: config.ENGINE_TOKEN_MASK_TIMEOUT_MS,
    enablePrefixCaching: config.ENGINE_PREFIX_CACHING,
    batchInvariant: config.ENGINE_BATCH_INVARIANT,
    ...(config.ENGINE_BACKEND === "paced"
      ? {
        paceStepUs: config.ENGINE_PACE_STEP_US,
        pacePrefillUsPerToken: config.ENGINE_PACE_PREFILL_US_PER_TOKEN,
      }
      : {}),
  };
}
