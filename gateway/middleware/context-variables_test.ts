import assert from "node:assert/strict";
import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { contextVariables } from "./context-variables.ts";

Deno.test("c.var is one object per request that follows every c.set; c.get agrees", async () => {
  const app = new Hono<AppEnv>();
  const seen: unknown[] = [];
  app.use("*", contextVariables());
  app.get("/", (c) => {
    const before = c.var;
    c.set("requestId", "r1");
    c.set("receivedAt", 5);
    c.set("requestId", "r2");
    seen.push(before === c.var, c.var.requestId, c.var.receivedAt, c.get("requestId"));
    return c.text("ok");
  });
  assert.equal((await app.request("/")).status, 200);
  assert.deepEqual(seen, [true, "r2", 5, "r2"]);
  await app.request("/");
  assert.equal(seen.length, 8);
});

Deno.test("each request gets its own variables", async () => {
  const app = new Hono<AppEnv>();
  const ids: unknown[] = [];
  app.use("*", contextVariables());
  app.get("/:id", (c) => {
    ids.push(c.var.requestId);
    c.set("requestId", c.req.param("id"));
    return c.text("ok");
  });
  await app.request("/a");
  await app.request("/b");
  assert.deepEqual(ids, [undefined, undefined]);
});
