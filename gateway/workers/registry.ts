/**
 * What the gateway knows about workers, from their heartbeats: which models
 * are served, each model's context length, and whether any worker is alive.
 *
 * Heartbeats are read at most every `refreshMs` (a cached snapshot), so the
 * request path does not pay a Redis round trip per request for them.
 */
import type { Redis } from "ioredis";
import { type WorkerHeartbeat, WorkerHeartbeatSchema } from "../../shared/protocol.ts";
import type { RedisKeys } from "../../shared/redis-keys.ts";

/** A model stays listed this long after its last worker's heartbeat (then 404, not 503). */
const MODEL_MEMORY_MS = 5 * 60_000;

export interface ServedModel {
  id: string;
  /** The smallest max_model_len among its workers: a request must fit any of them. */
  maxModelLen: number;
  /** Workers whose heartbeat is fresh. */
  liveWorkers: number;
  /** When this gateway first saw the model (seconds), reported as `created`. */
  created: number;
}

export interface WorkerSnapshot {
  models: Map<string, ServedModel>;
  liveWorkers: number;
}

export interface RegistryOptions {
  /** A heartbeat older than this means the worker is dead. */
  staleMs: number;
  /** Snapshot age after which it is read again. */
  refreshMs: number;
}

export class WorkerRegistry {
  readonly #redis: Redis;
  readonly #keys: RedisKeys;
  readonly #options: RegistryOptions;
  readonly #firstSeen = new Map<string, number>();
  #snapshot: { at: number; value: WorkerSnapshot } | undefined;
  #inflight: Promise<WorkerSnapshot> | undefined;
  /** The worker ids the last read listed: whose heartbeats the next read fetches at once. */
  #knownIds: string[] = [];

  constructor(redis: Redis, keys: RedisKeys, options: RegistryOptions) {
    this.#redis = redis;
    this.#keys = keys;
    this.#options = options;
  }

  /** The cached snapshot, read again when older than `refreshMs`. */
  async snapshot(): Promise<WorkerSnapshot> {
    if (this.#snapshot && Date.now() - this.#snapshot.at < this.#options.refreshMs) return this.#snapshot.value;
    return await this.refresh();
  }

  /** Reads the heartbeats now (concurrent callers share one read). */
  refresh(): Promise<WorkerSnapshot> {
    this.#inflight ??= this.#read().finally(() => this.#inflight = undefined);
    return this.#inflight;
  }

  /**
   * For a request waiting in the queue: a check that is true once no live
   * worker has served `model` for a whole stale period, so the request would
   * wait in vain. A worker restarting within that period does not trip it.
   */
  abandonedCheck(model: string): () => Promise<boolean> {
    let noWorkerSince: number | undefined;
    return async () => {
      const live = (await this.snapshot()).models.get(model)?.liveWorkers ?? 0;
      if (live > 0) {
        noWorkerSince = undefined;
        return false;
      }
      noWorkerSince ??= Date.now();
      return Date.now() - noWorkerSince >= this.#options.staleMs;
    };
  }

  /**
   * One round trip in the steady state: the heartbeats of the workers the last read found go out
   * right behind the set's read, and a second round trip (the heartbeats of the ids now listed) is
   * paid only when the set of workers changed. Either way the records are read after the set, as
   * the two ordered commands did.
   *
   * Two commands on the one connection, not a pipeline: the connection sends a turn's commands in
   * one write anyway (shared/redis-write-batching.ts), and an ioredis pipeline starts by copying
   * every script defined on its connection, BullMQ's included: 0.2 ms of the request's path at one
   * stream, where every request reads the workers again.
   */
  async #read(): Promise<WorkerSnapshot> {
    const now = Date.now();
    const listed = this.#knownIds;
    const set = this.#redis.zrangebyscore(this.#keys.workers, now - MODEL_MEMORY_MS, "+inf", "WITHSCORES");
    const heartbeats = listed.length > 0 ? this.#redis.mget(listed.map((id) => this.#keys.worker(id))) : undefined;
    // Awaited only if the set's read succeeds; its failure must not go unhandled meanwhile.
    heartbeats?.catch(() => {});
    const entries = await set;
    const listedRecords = heartbeats === undefined ? [] : await heartbeats;
    const ids: string[] = [];
    const lastSeen: number[] = [];
    for (let i = 0; i < entries.length; i += 2) {
      ids.push(entries[i]);
      lastSeen.push(Number(entries[i + 1]));
    }
    this.#knownIds = ids;
    const records = sameIds(ids, listed)
      ? listedRecords
      : ids.length > 0
      ? await this.#redis.mget(ids.map((id) => this.#keys.worker(id)))
      : [];

    const models = new Map<string, ServedModel>();
    let liveWorkers = 0;
    records.forEach((record, i) => {
      const heartbeat = parseHeartbeat(record);
      if (!heartbeat) return;
      const live = lastSeen[i] >= now - this.#options.staleMs;
      if (live) liveWorkers++;
      const known = models.get(heartbeat.model);
      const created = this.#firstSeen.get(heartbeat.model) ?? Math.floor(now / 1000);
      this.#firstSeen.set(heartbeat.model, created);
      models.set(heartbeat.model, {
        id: heartbeat.model,
        maxModelLen: Math.min(known?.maxModelLen ?? Infinity, heartbeat.maxModelLen),
        liveWorkers: (known?.liveWorkers ?? 0) + (live ? 1 : 0),
        created,
      });
    });
    const value = { models, liveWorkers };
    this.#snapshot = { at: now, value };
    return value;
  }
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function parseHeartbeat(record: string | null): WorkerHeartbeat | undefined {
  if (record === null) return undefined;
  try {
    return WorkerHeartbeatSchema.parse(JSON.parse(record));
  } catch {
    return undefined;
  }
}
