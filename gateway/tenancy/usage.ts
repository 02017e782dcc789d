/**
 * Usage per tenant per UTC day, and per key within it. The counters are
 * written by the rate limiter's scripts (admission counts requests and
 * rejections, settlement adds the tokens the client was told about), in the
 * same round trips that enforce the limits; this module names the fields and
 * reads them back. Only the keys' counters are written (every request has a
 * key): the tenant's day is their sum, one HINCRBY fewer per counter per
 * request than keeping both.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../../shared/redis-keys.ts";
import { invalidValue } from "./errors.ts";

/**
 * Counter names inside a usage hash, prefixed with `key:<id>:` per key. Hashes written before the
 * tenant's total was derived also hold unprefixed tenant counters (see `parseDay`).
 */
export const USAGE_FIELDS = {
  requests: "requests",
  rejectedRequests: "rejected",
  promptTokens: "prompt_tokens",
  completionTokens: "completion_tokens",
} as const;
export type UsageCounts = Record<keyof typeof USAGE_FIELDS, number>;

/** Usage hashes outlive their day by this long, then Redis drops them. */
export const USAGE_RETENTION_SECONDS = 400 * 24 * 3600;

/** When the usage hash of `day` (YYYY-MM-DD) expires, in unix seconds: its end plus the retention. */
export function usageExpiresAt(day: string): number {
  return Date.parse(`${day}T00:00:00Z`) / 1000 + 86_400 + USAGE_RETENTION_SECONDS;
}

export interface UsageDay {
  date: string;
  total: UsageCounts;
  keys: Record<string, UsageCounts>;
}

export interface UsageReport {
  tenantId: string;
  from: string;
  to: string;
  total: UsageCounts;
  days: UsageDay[];
}

const DAY_MS = 86_400_000;
const MAX_DAYS = 366;

export function utcDay(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(0, 10);
}

export function keyField(keyId: string, field: string): string {
  return `key:${keyId}:${field}`;
}

const zero = (): UsageCounts => ({
  requests: 0,
  rejectedRequests: 0,
  promptTokens: 0,
  completionTokens: 0,
});

function add(into: UsageCounts, from: UsageCounts): void {
  for (const name of Object.keys(into) as (keyof UsageCounts)[]) into[name] += from[name];
}

/** Usage of `tenantId` from `from` to `to` (inclusive UTC days). */
export async function readUsage(
  redis: Redis,
  keys: RedisKeys,
  tenantId: string,
  from: string,
  to: string,
): Promise<UsageReport> {
  const start = Date.parse(`${from}T00:00:00Z`);
  const end = Date.parse(`${to}T00:00:00Z`);
  if (Number.isNaN(start) || Number.isNaN(end)) {
    throw invalidValue("from and to are days: YYYY-MM-DD", "from");
  }
  if (end < start) throw invalidValue("`to` is before `from`", "to");
  if ((end - start) / DAY_MS >= MAX_DAYS) {
    throw invalidValue(`at most ${MAX_DAYS} days at once`, "from");
  }

  const dates: string[] = [];
  for (let t = start; t <= end; t += DAY_MS) dates.push(utcDay(t));
  const pipeline = redis.pipeline();
  for (const date of dates) pipeline.hgetall(keys.usage(tenantId, date));
  const results = await pipeline.exec();

  const total = zero();
  const days = dates.map((date, i) => {
    const [error, hash] = results![i];
    if (error) throw error;
    const day = parseDay(date, hash as Record<string, string>);
    add(total, day.total);
    return day;
  });
  return { tenantId, from, to, total, days };
}

const NAME_OF_FIELD = new Map<string, keyof UsageCounts>(
  Object.entries(USAGE_FIELDS).map(([name, field]) => [field, name as keyof UsageCounts]),
);

/**
 * The tenant's total is the sum of its keys'. A hash written while tenant counters were kept as
 * well holds them too: incremented with every key counter until they no longer were, so they
 * never exceed the keys' sum unless the hash predates key counters. The larger is the total.
 */
function parseDay(date: string, hash: Record<string, string>): UsageDay {
  const day: UsageDay = { date, total: zero(), keys: {} };
  const stored = zero();
  for (const [field, value] of Object.entries(hash)) {
    const keyed = /^key:([^:]+):(.+)$/.exec(field);
    const name = NAME_OF_FIELD.get(keyed?.[2] ?? field);
    if (name === undefined) continue;
    if (keyed === null) {
      stored[name] = Number(value);
      continue;
    }
    (day.keys[keyed[1]] ??= zero())[name] = Number(value);
    day.total[name] += Number(value);
  }
  for (const name of Object.keys(stored) as (keyof UsageCounts)[]) {
    day.total[name] = Math.max(day.total[name], stored[name]);
  }
  return day;
}
