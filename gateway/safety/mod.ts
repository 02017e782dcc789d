/**
 * Prompt safety as the gateway wires it: the input filter for the chain's safety slot, the output
 * scanner for the relay's hook, /v1/moderations, and the admin policy routes, all on one policy
 * store. main.ts and the tests build it the same way.
 */
import type { Redis } from "ioredis";
import type { RedisKeys } from "../../shared/redis-keys.ts";
import type { HarmonyTokenizer } from "../../shared/tokenizer.ts";
import type { GatewayDeps } from "../app.ts";
import type { GatewayMetrics } from "../metrics/gateway-metrics.ts";
import { safetyAdminRoutes } from "./admin_routes.ts";
import { inputSafety } from "./input_middleware.ts";
import { moderationRoutes } from "./moderations.ts";
import { outputSafety } from "./output_middleware.ts";
import { SafetyPolicyStore } from "./policy_store.ts";

export interface SafetyModuleDeps {
  redis: Redis;
  keys: RedisKeys;
  tokenizer: HarmonyTokenizer;
  metrics?: GatewayMetrics;
}

export function safetyModule({ redis, keys, tokenizer, metrics }: SafetyModuleDeps) {
  const policies = new SafetyPolicyStore(redis, keys);
  const gatewayDeps = {
    inputFilters: [inputSafety({ policies, tokenizer, metrics })],
    outputFilter: outputSafety(metrics),
    v1Routes: { "/v1/moderations": moderationRoutes(policies) },
  } satisfies Partial<GatewayDeps>;
  return {
    policies,
    gatewayDeps,
    /** Subscribes the policy cache to changes made through any gateway. */
    listen: (subscriber: Redis) => policies.listen(subscriber),
    /** The admin routes; `tenantExists` comes from tenancy's store. */
    adminRoutes: (tenantExists: (tenantId: string) => Promise<boolean>) =>
      safetyAdminRoutes({ policies, tenantExists }),
  };
}
