/**
 * Every Redis key, channel and queue name used by the stack, in one place.
 *
 * All names carry a prefix (REDIS_PREFIX) so several deployments, and every
 * test, can share one Redis without touching each other's data. Names that
 * belong to one request embed the request id inside `{...}` so that, on a
 * Redis Cluster, a request's keys hash to the same slot.
 */
export function redisKeys(prefix: string) {
  const rateLimitScope = (tenantId: string, keyId?: string) =>
    `${prefix}:rl:{${tenantId}}:${keyId === undefined ? "tenant" : `key:${keyId}`}`;
  return {
    /** BullMQ prefix; the queue itself is `${prefix}:bull:generate:*`. */
    bullPrefix: `${prefix}:bull`,
    queueName: "generate",
    /**
     * Sorted set of admitted requests not yet in the queue (request id scored by
     * expiry, ms): counted with the waiting jobs so QUEUE_MAX_WAITING holds
     * exactly under concurrent admissions.
     */
    queueReservations: `${prefix}:bull-reservations`,
    /**
     * Per-request event channel: the worker publishes, the gateway relays. It names the gateway
     * that holds the request (the job carries the gateway's id), so each gateway listens to its
     * own requests' channels with one pattern subscription, set up once at its start.
     */
    eventChannel: (gatewayId: string, requestId: string) =>
      `${prefix}:gen:${gatewayId}:{${requestId}}`,
    /** Pattern matching every event channel of one gateway (its one PSUBSCRIBE). */
    eventChannelPattern: (gatewayId: string) => `${escapeGlob(`${prefix}:gen:${gatewayId}:`)}*`,
    /** Cancellation broadcast: message = request id; every worker listens. */
    cancelChannel: `${prefix}:cancel`,
    /** Cancellation marker for a job not yet running (checked when it starts). */
    cancelMarker: (requestId: string) => `${prefix}:cancelled:{${requestId}}`,
    /**
     * The worker that owns a request's stream now (an attempt token). Only the
     * owner may publish; a worker that takes over a stalled job claims it.
     */
    streamOwner: (requestId: string) => `${prefix}:stream:{${requestId}}:owner`,
    /**
     * The request's stream as published so far, one list entry per publish
     * (the events and the completion token ids they cover): what a worker
     * resumes from when the one before it died.
     */
    streamLog: (requestId: string) => `${prefix}:stream:{${requestId}}:log`,
    /** Sorted set of worker ids scored by last heartbeat (ms since epoch). */
    workers: `${prefix}:workers`,
    /** JSON heartbeat of one worker (model, engine stats), with a TTL. */
    worker: (workerId: string) => `${prefix}:worker:${workerId}`,
    /** Tenant record (JSON). */
    tenant: (tenantId: string) => `${prefix}:tenant:${tenantId}`,
    /** Sorted set of tenant ids scored by creation time (ms). */
    tenants: `${prefix}:tenants`,
    /** API key record (JSON) by SHA-256 of the key (hex); the plain key is never stored. */
    apiKey: (keyHash: string) => `${prefix}:apikey:${keyHash}`,
    /** Hash of one tenant's keys: key id -> key hash. */
    tenantKeys: (tenantId: string) => `${prefix}:tenant:${tenantId}:keys`,
    /** A tenant's safety policy (JSON); absent = the default policy. */
    safetyPolicy: (tenantId: string) => `${prefix}:tenant:${tenantId}:safety`,
    /** Tenancy changes (message: JSON `{tenantId, keyHash?}`); gateways drop cached keys. */
    tenancyInvalidation: `${prefix}:tenancy:invalidate`,
    /** Tenant ids whose safety policy changed (gateway/safety/policy_store.ts). */
    safetyInvalidation: `${prefix}:safety:invalidate`,
    /**
     * Rate-limit state of one scope: the tenant as a whole (`keyId` absent) or
     * one of its keys. The tenant id is the hash tag, so one admission script
     * touches a single Cluster slot.
     */
    requestBucket: (tenantId: string, keyId?: string) =>
      `${rateLimitScope(tenantId, keyId)}:requests`,
    tokenBucket: (tenantId: string, keyId?: string) => `${rateLimitScope(tenantId, keyId)}:tokens`,
    /** Concurrency slot released (message: tenant id): waiting requests retry. */
    slotReleased: `${prefix}:rl:released`,
    /** Sorted set of concurrency leases (lease id scored by expiry, ms). */
    leases: (tenantId: string, keyId?: string) => `${rateLimitScope(tenantId, keyId)}:leases`,
    /** Usage hash of one tenant for one UTC day (`YYYY-MM-DD`); per-key fields inside. */
    usage: (tenantId: string, day: string) => `${prefix}:usage:{${tenantId}}:${day}`,
    /** Stream of admin actions (who, what, when). */
    audit: `${prefix}:audit`,
  } as const;
}

/** `text` as a literal inside a Redis glob pattern. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, "\\$&");
}

export type RedisKeys = ReturnType<typeof redisKeys>;
