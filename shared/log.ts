/**
 * Structured logs for every process: one JSON object per line on stdout, with
 * the time, level, message and the fields bound to the logger. A request's
 * logger is a `child` bound to its `requestId`, so every line it writes carries
 * the id. Prompt and output text appear only where the caller passes them,
 * which callers do only with LOG_PROMPTS. Runs under Deno (gateway) and Node
 * (worker): it uses no runtime-specific API.
 */
import { setImmediate } from "node:timers";

export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose every line also carries `fields` (e.g. `{ requestId }`). */
  child(fields: LogFields): Logger;
}

/** Errors serialize to `{}` in JSON; keep what helps an operator. */
function plain(value: unknown): unknown {
  return value instanceof Error ? { name: value.name, message: value.message } : value;
}

export function createLogger(
  minLevel: LogLevel,
  base: LogFields,
  write: (line: string) => void = (line) => console.log(line),
): Logger {
  const log = (level: LogLevel) => (msg: string, fields: LogFields = {}) => {
    if (RANK[level] < RANK[minLevel]) return;
    // Built in place: every request writes a line, and intermediate entry arrays were garbage.
    const record: LogFields = { time: new Date().toISOString(), level, msg, ...base };
    for (const key in fields) record[key] = plain(fields[key]);
    write(JSON.stringify(record));
  };
  return {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (fields) => createLogger(minLevel, { ...base, ...fields }, write),
  };
}

/** A line writer whose lines may wait; `flush` writes what waits at once. */
export interface BufferedLineWriter {
  (line: string): void;
  flush(): void;
}

/**
 * A line writer that hands `write` the lines of one event-loop turn together, as one text.
 * Every request writes a line, and each `console.log` is a write syscall of its own (`op_print`,
 * 3 % of the gateway's CPU at 256 streams); a line waits at most for the rest of its turn. A
 * process that is about to die calls `flush`, so its last lines are not lost.
 */
export function linesPerTurn(
  write: (text: string) => void = (text) => console.log(text),
): BufferedLineWriter {
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const lines = pending;
    pending = [];
    write(lines.join("\n"));
  };
  const writer = (line: string) => {
    if (pending.length === 0) setImmediate(flush);
    pending.push(line);
  };
  writer.flush = flush;
  return writer;
}
