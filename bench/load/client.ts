/** One streaming chat completion, timed from send to last byte. */
import http from "node:http";
import { mulberry32 } from "./distribution.ts";
import { readSse } from "./sse.ts";
import { TIMELINE_COMMENT_PREFIX, TIMELINE_HEADER, type Timeline, timelineAt } from "../../shared/timeline.ts";

export interface RequestSpec {
  promptWords: number;
  maxTokens: number;
}

export interface RequestOutcome {
  ok: boolean;
  /** `http_<status>`, `stream_<code>`, `bad_event` (not JSON), `truncated_stream`, `aborted` or `network`. */
  errorType?: string;
  startedAt: number;
  ttftMs?: number;
  e2eMs: number;
  /** Gaps between consecutive chunks that carried text. */
  chunkGapsMs: number[];
  completionTokens: number;
  promptTokens: number;
  /** The request's latency timeline, when it was asked for (`runRequest`'s `timeline`). */
  timeline?: Timeline;
}

export interface Target {
  baseUrl: string;
  apiKey: string;
  model: string;
}

/** Each word is one o200k token after a space, so a prompt of N words is N tokens. */
const WORDS = ("the quick brown fox jumps over a lazy dog while seven kings quietly judge " +
  "boxing matches near the old harbour and every river bends toward distant mountains").split(" ");

/**
 * A prompt of `words` words drawn by a PRNG seeded with `salt`: a new salt is a new text from its
 * first words on, so no two requests of a run share a prefix beyond the chat template (a repeated
 * text would be served from the engine's prefix cache, measuring the cache instead of prefill).
 */
export function promptOf(words: number, salt: number): string {
  const rand = mulberry32(salt);
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(WORDS[Math.floor(rand() * WORDS.length)]);
  return out.join(" ");
}

/** The comment of a timeline comment line, as readSse hands it over (no leading colon). */
const TIMELINE_COMMENT = TIMELINE_COMMENT_PREFIX.slice(1).trimStart();

/**
 * How requests go out. `http`: node:http over a keep-alive agent, the leanest client Node has;
 * the timed runs use it so the client's own cost stays out of the stack's latency (send to the
 * gateway's first middleware: ≈ 0.6 ms against fetch's 1.1–1.4 ms on the dev VM, the same 6 KB
 * body to a bare Deno server). `fetch`: Node's fetch (undici), what the openai SDK uses, so a run
 * with it shows what an SDK client pays on top.
 */
export type HttpClient = "http" | "fetch";
export const HTTP_CLIENTS: readonly HttpClient[] = ["http", "fetch"];

/** A response's status and its body's bytes as they arrive. */
interface Answer {
  status: number;
  body: AsyncIterable<Uint8Array>;
  /** Drops an unread body. */
  discard(): Promise<void>;
}

/** One pool for the process: every request after a level's first reuses a warm connection. */
const agent = new http.Agent({ keepAlive: true });

function postHttp(url: string, headers: Record<string, string>, body: string, signal?: AbortSignal): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: "POST",
      agent,
      signal,
      headers: { ...headers, "content-length": String(Buffer.byteLength(body)) },
    }, (res) => {
      resolve({
        status: res.statusCode ?? 0,
        body: res,
        discard: async () => void res.resume(),
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function postFetch(url: string, headers: Record<string, string>, body: string, signal?: AbortSignal): Promise<Answer> {
  const res = await fetch(url, { method: "POST", signal, headers, body });
  const stream = res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
  return { status: res.status, body: stream, discard: () => stream.cancel() };
}

/**
 * `timeline`: ask the stack for the request's latency timeline (shared/timeline.ts) and add the
 * client's own stages to it: sent, first text, [DONE]. The clock starts once the body is built:
 * drawing a 1 000-word prompt is the bench's work, not the stack's.
 */
export async function runRequest(
  target: Target,
  spec: RequestSpec,
  salt: number,
  options: { signal?: AbortSignal; timeline?: boolean; client?: HttpClient } = {},
): Promise<RequestOutcome> {
  const body = JSON.stringify({
    model: target.model,
    messages: [{ role: "user", content: promptOf(spec.promptWords, salt) }],
    max_tokens: spec.maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  });
  const headers = {
    "content-type": "application/json",
    authorization: `Bearer ${target.apiKey}`,
    ...(options.timeline ? { [TIMELINE_HEADER]: "1" } : {}),
  };
  const post = (options.client ?? "http") === "http" ? postHttp : postFetch;
  const startedAt = performance.now();
  const outcome: RequestOutcome = { ok: false, startedAt, e2eMs: 0, chunkGapsMs: [], completionTokens: 0, promptTokens: 0 };
  const onComment = options.timeline
    ? (comment: string) => {
      if (comment.startsWith(TIMELINE_COMMENT)) outcome.timeline = JSON.parse(comment.slice(TIMELINE_COMMENT.length));
    }
    : undefined;
  try {
    const res = await post(`${target.baseUrl}/v1/chat/completions`, headers, body, options.signal);
    if (res.status < 200 || res.status >= 300) {
      outcome.errorType = `http_${res.status}`;
      await res.discard();
      return finish(outcome);
    }
    let lastTextAt: number | undefined;
    let done = false;
    // Read to the end, past [DONE]: leaving a body unread closes its connection, and the next
    // request would pay for a new one.
    for await (const { data, at } of readSse(res.body, onComment)) {
      if (done || outcome.errorType === "bad_event") continue;
      if (data === "[DONE]") {
        done = true;
        outcome.ok = outcome.errorType === undefined;
        if (outcome.timeline) {
          outcome.timeline.sent = timelineAt(startedAt);
          if (outcome.ttftMs !== undefined) outcome.timeline.firstText = timelineAt(startedAt + outcome.ttftMs);
          outcome.timeline.doneReceived = timelineAt(at);
        }
        continue;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        outcome.errorType = "bad_event";
        continue;
      }
      if (chunk.error) {
        outcome.errorType = `stream_${chunk.error.code ?? chunk.error.type ?? "error"}`;
        continue;
      }
      if (chunk.usage) {
        outcome.completionTokens = chunk.usage.completion_tokens;
        outcome.promptTokens = chunk.usage.prompt_tokens;
      }
      const delta = chunk.choices?.[0]?.delta;
      if (delta && (delta.content || delta.reasoning_content)) {
        if (outcome.ttftMs === undefined) outcome.ttftMs = at - startedAt;
        else if (lastTextAt !== undefined) outcome.chunkGapsMs.push(at - lastTextAt);
        lastTextAt = at;
      }
    }
    if (!outcome.ok && outcome.errorType === undefined) outcome.errorType = "truncated_stream";
  } catch (err) {
    outcome.errorType = (err as Error).name === "AbortError" ? "aborted" : "network";
  }
  return finish(outcome);
}

function finish(o: RequestOutcome): RequestOutcome {
  o.e2eMs = performance.now() - o.startedAt;
  return o;
}
