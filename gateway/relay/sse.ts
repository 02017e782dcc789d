/**
 * Relays a generation to the client as server-sent events in OpenAI's
 * framing: `data: <chunk>` events, `: keep-alive` comments while nothing else
 * is written (a request waiting in the queue), an optional usage chunk, then
 * `data: [DONE]`. A failure after the stream has started is sent as one
 * `data: {"error": ...}` event and the stream closes without [DONE]: a client
 * can never mistake a truncated answer for a complete one. A client that goes
 * away cancels the generation.
 *
 * A client that does not read (or reads slower than the model writes) is
 * dropped, like one that went away, once a write to it has waited longer than
 * `writeTimeoutMs` or the events held for it exceed `maxBufferedBytes`: a
 * stalled reader can hold neither an engine slot nor gateway memory for long.
 */
import type { Context } from "hono";
import { type SSEStreamingApi, streamSSE } from "hono/streaming";
import type { AppEnv } from "../env.ts";
import type { Logger } from "../../shared/log.ts";
import { GatewayError, toOpenAIError } from "../errors.ts";
import type { ChunkFormat } from "../responses/common.ts";
import type { Generation } from "./generation.ts";

export interface SlowClientLimits {
  writeTimeoutMs: number;
  maxBufferedBytes: number;
}

export interface SSEOptions {
  includeUsage: boolean;
  keepAliveMs: number;
  slowClient: SlowClientLimits;
}

export const KEEP_ALIVE_COMMENT = ": keep-alive\n\n";
export const DONE_EVENT = "[DONE]";

export function relaySSE(
  c: Context<AppEnv>,
  generation: Generation,
  format: ChunkFormat,
  options: SSEOptions,
): Response {
  const requestEnd = c.var.requestEnd;
  return streamSSE(c, async (stream) => {
    let lastWrite = Date.now();
    /** When the write in progress started; undefined while none waits on the client. */
    let writingSince: number | undefined;
    /**
     * Writes events in one write to the client: a token's chunks (the role and first content,
     * or finish, usage and [DONE]) go out together. Event data is JSON or [DONE], never a line
     * break, so each event is the one `data:` line writeSSE would make.
     */
    const send = async (events: string[]) => {
      if (events.length === 0) return;
      lastWrite = writingSince = Date.now();
      await stream.write(events.map((data) => `data: ${data}\n\n`).join(""));
      writingSince = undefined;
    };
    const keepAlive = setInterval(() => {
      if (Date.now() - lastWrite < options.keepAliveMs) return;
      lastWrite = Date.now();
      void stream.write(KEEP_ALIVE_COMMENT);
    }, options.keepAliveMs / 2);
    const { writeTimeoutMs, maxBufferedBytes } = options.slowClient;
    const slowClientCheck = setInterval(() => {
      const stalled = writingSince !== undefined && Date.now() - writingSince > writeTimeoutMs;
      if (!stalled && generation.bufferedBytes <= maxBufferedBytes) return;
      c.var.log.warn("dropping a client that does not keep up with its stream", {
        writeStalled: stalled,
        bufferedBytes: generation.bufferedBytes,
      });
      stream.abort(); // unblocks the write; the abort handler below cancels the generation
    }, Math.min(1000, writeTimeoutMs / 4));
    stream.onAbort(() => {
      requestEnd.end({ status: "cancelled", usage: generation.usage });
      void generation.cancel();
    });

    try {
      for (
        let update = await generation.nextUpdate();
        update !== undefined;
        update = await generation.nextUpdate()
      ) {
        if (stream.aborted) break;
        if (update.type === "text") {
          await send(format.text(update).map((chunk) => JSON.stringify(chunk)));
          continue;
        }
        const last = format.finish(update.finishReason).map((chunk) => JSON.stringify(chunk));
        if (options.includeUsage) last.push(JSON.stringify(format.usage(update.usage)));
        await send([...last, DONE_EVENT]);
        requestEnd.end({
          status: "completed",
          finishReason: update.finishReason,
          usage: update.usage,
        });
      }
    } catch (err) {
      if (!stream.aborted) await sendError(stream, err, c.var.log);
      requestEnd.end({
        status: "failed",
        failure: err instanceof GatewayError ? err.failure : undefined,
      });
    } finally {
      clearInterval(keepAlive);
      clearInterval(slowClientCheck);
      await generation.close();
    }
  });
}

async function sendError(stream: SSEStreamingApi, err: unknown, log: Logger): Promise<void> {
  const mapped = toOpenAIError(err);
  if (mapped.status >= 500) log.error("stream failed", { err });
  await stream.writeSSE({ data: JSON.stringify(mapped.body) });
}
