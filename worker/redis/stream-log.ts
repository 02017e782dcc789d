/**
 * A request's stream, kept resumable. Every publish on the request's channel
 * goes through one Lua call that also appends the published events, and the
 * completion token ids they cover, to the request's stream log. When the
 * worker running a job dies, BullMQ's stalled-job check hands the job to
 * another worker, which reads the log back (`claim`) and continues from it:
 * the gateway sees one gap-free stream.
 *
 * Ownership is fenced: `claim` makes the caller the stream's only owner, and a
 * publish from anyone else is refused. A worker that was merely slow (its job
 * lock ran out while it was still generating) learns it lost the stream on its
 * next publish and stops, so two workers can never interleave on one channel.
 *
 * The log lives until the request's deadline (plus a margin); the worker
 * deletes it as soon as the job is over.
 */
import type { Redis } from "ioredis";
import {
  type Job,
  type StreamEvent,
  StreamEventSchema,
  type TokenLogprob,
  type ToolCall,
} from "../../shared/protocol.ts";
import { accumulateToolCalls } from "../../shared/tool-calls.ts";
import type { RedisKeys } from "../../shared/redis-keys.ts";

/** How long the log outlives the request's deadline: a job that ends late still finds it. */
const LOG_MARGIN_MS = 60_000;

/** KEYS: owner, log. ARGV: owner token, ttl ms. Makes the caller the owner; returns the log. */
const CLAIM = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('LRANGE', KEYS[2], 0, -1)
`;

/**
 * KEYS: owner, log. ARGV: owner token, ttl ms, channel, log entry, events...
 * Returns -1 when the caller no longer owns the stream (nothing published),
 * else the number of subscribers that received the last event.
 */
const APPEND = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local heard = 0
for i = 5, #ARGV do heard = redis.call('PUBLISH', ARGV[3], ARGV[i]) end
return heard
`;

interface StreamLogCommands {
  streamLogClaim(owner: string, log: string, token: string, ttlMs: number): Promise<string[]>;
  streamLogAppend(
    owner: string,
    log: string,
    token: string,
    ttlMs: number,
    channel: string,
    entry: string,
    ...events: string[]
  ): Promise<number>;
}

/** One log entry: the events of one publish and the completion tokens they cover. */
interface LogEntry {
  tokenIds: number[];
  events: string[];
}

/** What was published before this worker took the stream over. */
export interface RecordedStream {
  /** Every event published so far, in order. */
  events: StreamEvent[];
  /** Completion tokens whose text is fully accounted for by `events` (held-back text included). */
  tokenIds: number[];
}

/** Where a request's stream is published: its id, and the gateway listening for it. */
export type StreamAddress = Pick<Job, "requestId" | "gatewayId">;

/** What became of a publish: delivered, delivered to nobody (the gateway is gone), or refused. */
export type AppendOutcome = "heard" | "unheard" | "not_owner";

export class StreamLog {
  readonly #redis: Redis & StreamLogCommands;
  readonly #keys: { owner: string; log: string; channel: string };
  readonly #token: string;
  readonly #deadline: number;

  /**
   * `stream`: the request, and the gateway whose channel carries its events; `token` identifies
   * this attempt (unique per worker and job run); `deadline` is the request's, in epoch ms.
   */
  constructor(
    redis: Redis,
    keys: RedisKeys,
    stream: StreamAddress,
    token: string,
    deadline: number,
  ) {
    this.#redis = withCommands(redis);
    this.#keys = {
      owner: keys.streamOwner(stream.requestId),
      log: keys.streamLog(stream.requestId),
      channel: keys.eventChannel(stream.gatewayId, stream.requestId),
    };
    this.#token = token;
    this.#deadline = deadline;
  }

  /** Takes the stream over; resolves with what was published before. */
  async claim(): Promise<RecordedStream> {
    const entries = await this.#redis.streamLogClaim(
      this.#keys.owner,
      this.#keys.log,
      this.#token,
      this.#ttlMs(),
    );
    const recorded: RecordedStream = { events: [], tokenIds: [] };
    for (const raw of entries) {
      const entry = JSON.parse(raw) as LogEntry;
      recorded.tokenIds.push(...entry.tokenIds);
      for (const event of entry.events) {
        recorded.events.push(StreamEventSchema.parse(JSON.parse(event)));
      }
    }
    return recorded;
  }

  /** Publishes `events` (serialized, in order) and records them with the tokens they cover, atomically. */
  async append(events: string[], tokenIds: number[]): Promise<AppendOutcome> {
    const entry = JSON.stringify({ tokenIds, events } satisfies LogEntry);
    const heard = await this.#redis.streamLogAppend(
      this.#keys.owner,
      this.#keys.log,
      this.#token,
      this.#ttlMs(),
      this.#keys.channel,
      entry,
      ...events,
    );
    return heard < 0 ? "not_owner" : heard === 0 ? "unheard" : "heard";
  }

  /** The job is over: nothing will resume it. */
  async delete(): Promise<void> {
    await this.#redis.del(this.#keys.owner, this.#keys.log);
  }

  #ttlMs(): number {
    return Math.max(0, this.#deadline - Date.now()) + LOG_MARGIN_MS;
  }
}

/** Registers the scripts once per connection (ioredis runs them by SHA, loading them on NOSCRIPT). */
function withCommands(redis: Redis): Redis & StreamLogCommands {
  const commands = redis as Redis & Partial<StreamLogCommands>;
  if (commands.streamLogAppend === undefined) {
    redis.defineCommand("streamLogClaim", { numberOfKeys: 2, lua: CLAIM });
    redis.defineCommand("streamLogAppend", { numberOfKeys: 2, lua: APPEND });
  }
  return redis as Redis & StreamLogCommands;
}

/** The text, logprobs and function calls a stream's deltas carried, joined. */
export function publishedOutput(
  events: readonly StreamEvent[],
): { content: string; reasoning: string; logprobs: TokenLogprob[]; toolCalls: ToolCall[] } {
  let content = "";
  let reasoning = "";
  const logprobs: TokenLogprob[] = [];
  const toolCalls: ToolCall[] = [];
  for (const event of events) {
    if (event.type !== "delta") continue;
    content += event.content;
    reasoning += event.reasoning;
    if (event.logprobs) logprobs.push(...event.logprobs);
    if (event.toolCalls) accumulateToolCalls(toolCalls, event.toolCalls);
  }
  return { content, reasoning, logprobs, toolCalls };
}
