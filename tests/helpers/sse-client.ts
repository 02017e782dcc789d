/**
 * A raw streaming client for fault tests: it sends one streaming completion
 * with fetch and parses the SSE body itself, so a test can watch the text
 * arrive, stop reading, abort at a chosen moment, and see exactly how the
 * stream ended (`[DONE]`, an error event, or a connection that closed).
 */
import { MODEL_NAME } from "./stack.ts";

export interface StreamEnd {
  /** `[DONE]` arrived: the answer is complete. */
  done: boolean;
  /** The error event's `error` object, when the stream ended with one. */
  error: { message: string; type: string; code: string | null } | undefined;
  /** The connection failed before either (e.g. the gateway died). */
  broken: boolean;
  text: string;
  finishReason: string | null;
  usage:
    | {
      prompt_tokens: number;
      completion_tokens: number;
      total_tokens: number;
      prompt_tokens_details: { cached_tokens: number };
    }
    | undefined;
}

/**
 * The token counts of a usage, without `prompt_tokens_details`: a resumed
 * request may find its prompt in the other worker's prefix cache, so
 * `cached_tokens` can differ from an undisturbed run's while every count agrees.
 */
export function tokenCounts(usage: StreamEnd["usage"]) {
  return usage && {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    total_tokens: usage.total_tokens,
  };
}

export interface OpenStream {
  status: number;
  headers: Headers;
  /** Text received so far. */
  readonly text: string;
  /** Resolves once at least `chars` characters of text have arrived (rejects if the stream ends first). */
  textAtLeast(chars: number): Promise<void>;
  /** Resolves when the stream is over, however it ended. */
  ended: Promise<StreamEnd>;
  /** Drops the connection (a client that goes away). */
  abort(): void;
}

export interface StreamRequest {
  url: string;
  apiKey: string;
  body: Record<string, unknown>;
}

/** POSTs a streaming /v1/completions request (prompt and model defaulted) and starts reading it. */
export async function openStream({ url, apiKey, body }: StreamRequest): Promise<OpenStream> {
  const controller = new AbortController();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL_NAME,
      prompt: "Once upon a time",
      stream: true,
      stream_options: { include_usage: true },
      ...body,
    }),
    signal: controller.signal,
  });
  const state: StreamEnd = {
    done: false,
    error: undefined,
    broken: false,
    text: "",
    finishReason: null,
    usage: undefined,
  };
  const waiters = new Set<() => void>();
  const notify = () => waiters.forEach((w) => w());
  let over = false;

  const ended = (async (): Promise<StreamEnd> => {
    if (!res.ok || res.body === null) {
      state.error = ((await res.json().catch(() => ({}))) as { error?: StreamEnd["error"] }).error;
      return state;
    }
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let boundary: number;
        while ((boundary = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) =>
            l.slice(6)
          ).join("\n");
          if (data === "") continue; // keep-alive comment
          if (data === "[DONE]") {
            state.done = true;
            continue;
          }
          const parsed = JSON.parse(data);
          if (parsed.error) state.error = parsed.error;
          if (parsed.usage) state.usage = parsed.usage;
          for (const choice of parsed.choices ?? []) {
            state.text += choice.text ?? "";
            state.finishReason = choice.finish_reason ?? state.finishReason;
          }
          notify();
        }
      }
    } catch {
      state.broken = !state.done && state.error === undefined;
    }
    return state;
  })().finally(() => {
    over = true;
    notify();
  });

  return {
    status: res.status,
    headers: res.headers,
    get text() {
      return state.text;
    },
    textAtLeast(chars) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (state.text.length >= chars) {
            waiters.delete(check);
            resolve();
          } else if (over) {
            waiters.delete(check);
            reject(
              new Error(
                `stream ended after ${state.text.length} characters: ${JSON.stringify(state)}`,
              ),
            );
          }
        };
        waiters.add(check);
        check();
      });
    },
    ended,
    abort: () => controller.abort(),
  };
}
