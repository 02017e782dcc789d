/**
 * Configuration for every process, in one zod-validated place. Each process
 * reads its environment once at start; an invalid value stops it with a message
 * naming the variable. Defaults run the embedded stack (`npm start`).
 */
import { z } from "zod";

const int = (def: number) => z.coerce.number().int().default(def);
const bool = (def: boolean) =>
  z.enum(["1", "0", "true", "false", "yes", "no"]).default(def ? "1" : "0")
    .transform((v) => v === "1" || v === "true" || v === "yes");

const common = {
  REDIS_URL: z.string().url().default("redis://127.0.0.1:6379"),
  /** Prefix of every Redis key; tests use their own. */
  REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9_.-]+$/).default("gos"),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
  /** Log prompt and output text. Off by default: logs must not carry user data. */
  LOG_PROMPTS: bool(false),
};

export const GatewayConfigSchema = z.object({
  ...common,
  PORT: int(8000).pipe(z.number().min(0).max(65535)),
  HOST: z.string().default("0.0.0.0"),
  /**
   * Port of the gateway's /metrics listener, apart from the API port: metrics
   * carry per-tenant figures, so only the operator's network (Prometheus) may
   * reach them, never tenants. 0 = pick a free port.
   */
  METRICS_PORT: int(9401).pipe(z.number().min(0).max(65535)),
  METRICS_HOST: z.string().default("0.0.0.0"),
  /** Token for /admin/v1; admin API is disabled when unset. */
  ADMIN_TOKEN: z.string().min(16).optional(),
  MAX_BODY_BYTES: int(1 << 20).pipe(z.number().positive()),
  /** Whole-request deadline: queue wait plus generation. */
  REQUEST_TIMEOUT_MS: int(300_000).pipe(z.number().positive()),
  /** A running stream with no event for this long ends with an error. */
  STREAM_IDLE_TIMEOUT_MS: int(60_000).pipe(z.number().positive()),
  /**
   * A streaming client that accepts no data for this long (its write has not
   * completed) is dropped, and its generation cancelled.
   */
  STREAM_WRITE_TIMEOUT_MS: int(30_000).pipe(z.number().positive()),
  /**
   * Bytes of events a stream may hold for a client that reads slower than the
   * model writes; past this the client is dropped. Bounds each stream's memory.
   */
  STREAM_MAX_BUFFER_BYTES: int(1 << 20).pipe(z.number().positive()),
  /** SSE comment interval while a request waits. */
  KEEPALIVE_MS: int(10_000).pipe(z.number().positive()),
  /** Waiting jobs above which new requests get 503. */
  QUEUE_MAX_WAITING: int(1000).pipe(z.number().positive()),
  /** A worker whose heartbeat is older than this is considered dead. */
  WORKER_STALE_MS: int(5000).pipe(z.number().positive()),
  /** max_tokens when the request gives none. */
  DEFAULT_MAX_TOKENS: int(1024).pipe(z.number().positive()),
});
export type GatewayConfig = z.infer<typeof GatewayConfigSchema>;

export const WorkerConfigSchema = z.object({
  ...common,
  MODEL_DIR: z.string().default(".models/tiny"),
  /** Name clients use in `model`. */
  MODEL_NAME: z.string().default("gpt-oss-tiny"),
  /**
   * `paced`, for benches only: an engine that computes nothing and takes a GPU's time per step
   * (ENGINE_PACE_*), its answers letters: the stack around a busy engine, on a host without a GPU.
   */
  ENGINE_BACKEND: z.enum(["cpu", "cuda", "paced"]).default("cpu"),
  /** ENGINE_BACKEND=paced: one step, µs (an H100's batch-1 decode step of the 20b model). */
  ENGINE_PACE_STEP_US: int(4000).pipe(z.number().positive()),
  /** ENGINE_BACKEND=paced: each further prompt token of a step, µs (≈ 40 ms for a 1 024-token prefill). */
  ENGINE_PACE_PREFILL_US_PER_TOKEN: int(35).pipe(z.number().positive()),
  ENGINE_TP: int(1).pipe(z.number().refine((n) => [1, 2, 4, 8].includes(n), "must be 1, 2, 4 or 8")),
  /** With ENGINE_TP > 1: split every expert's columns over the ranks, or the experts whole. */
  ENGINE_MOE_SHARDING: z.enum(["intermediate", "experts"]).default("intermediate"),
  /** With ENGINE_TP > 1 on cuda: the ranks' all-reduce, the peer-to-peer kernel or NCCL (needs a GPU per rank). */
  ENGINE_TP_ALL_REDUCE: z.enum(["peer", "nccl"]).default("peer"),
  ENGINE_MAX_NUM_SEQS: int(32).pipe(z.number().positive()),
  ENGINE_MAX_MODEL_LEN: int(4096).pipe(z.number().positive()),
  /** KV cache size in bytes (CPU); 0 = derive from ENGINE_GPU_MEMORY_UTILIZATION (CUDA). */
  ENGINE_KV_CACHE_BYTES: int(256 << 20).pipe(z.number().min(0)),
  ENGINE_GPU_MEMORY_UTILIZATION: z.coerce.number().gt(0).max(1).default(0.9),
  ENGINE_MAX_BATCHED_TOKENS: int(2048).pipe(z.number().positive()),
  /** CPU threads for the CPU backend; 0 = all cores. */
  ENGINE_THREADS: int(0).pipe(z.number().min(0)),
  /** A constrained request whose next token mask is not ready this long after its step needs it fails. */
  ENGINE_TOKEN_MASK_TIMEOUT_MS: int(10_000).pipe(z.number().positive()),
  /** Compiled grammars (response_format schemas) a worker keeps, least recently used dropped first. */
  GRAMMAR_CACHE_SIZE: int(64).pipe(z.number().positive()),
  /**
   * Automatic prefix caching (vLLM's --enable-prefix-caching): a prompt's KV
   * blocks are kept after its request and reused by later requests of the
   * same tenant that start with the same tokens.
   */
  ENGINE_PREFIX_CACHING: bool(true),
  /**
   * CUDA: choose every kernel as for a prefill whatever a step's size, so a
   * request's tokens never depend on what it was batched with, on chunking or
   * on a prefix-cache hit (vLLM's VLLM_BATCH_INVARIANT); small batches get
   * slower. The CPU backend is always batch invariant.
   */
  ENGINE_BATCH_INVARIANT: bool(false),
  WORKER_ID: z.string().optional(),
  HEARTBEAT_MS: int(1000).pipe(z.number().positive()),
  /** On SIGTERM, running jobs get this long to finish before they go back to the queue (to be resumed elsewhere). */
  SHUTDOWN_GRACE_MS: int(30_000).pipe(z.number().min(0)),
  /**
   * A running job's lock lasts this long and is renewed at half of it. When its
   * worker dies, the lock runs out and another worker resumes the job within
   * about twice this (lock expiry, then the next stalled-job check).
   */
  JOB_LOCK_MS: int(5000).pipe(z.number().min(500)),
  /** Times one job may be resumed after its worker died before it fails. */
  JOB_MAX_RESUMES: int(2).pipe(z.number().min(0)),
  /** Tokens are coalesced this long before one publish. */
  PUBLISH_INTERVAL_MS: int(5).pipe(z.number().min(0)),
  /** Port of the worker's /metrics; 0 = pick a free one. */
  METRICS_PORT: int(9400).pipe(z.number().min(0).max(65535)),
});
export type WorkerConfig = z.infer<typeof WorkerConfigSchema>;

/** Parses `env` with `schema`; on failure throws one message naming every bad variable. */
export function loadConfig<S extends z.ZodTypeAny>(
  schema: S,
  env: Record<string, string | undefined>,
): z.infer<S> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
  throw new Error(`invalid configuration: ${problems.join("; ")}`);
}
