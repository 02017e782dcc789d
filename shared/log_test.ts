import assert from "node:assert/strict";
import { createLogger, linesPerTurn, type LogLevel } from "./log.ts";

function capture(level: LogLevel) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger(
    level,
    { service: "gateway" },
    (line) => lines.push(JSON.parse(line)),
  );
  return { logger, lines };
}

Deno.test("every line of a child logger is JSON carrying the request id", () => {
  const { logger, lines } = capture("info");
  const request = logger.child({ requestId: "req-1" }).child({ tenantId: "t1" });
  request.info("enqueued", { queueDepth: 3 });
  request.error("failed", { err: new Error("boom") });
  logger.info("unrelated");
  assert.equal(lines.length, 3);
  for (const line of lines.slice(0, 2)) {
    assert.deepEqual([line.service, line.requestId, line.tenantId], ["gateway", "req-1", "t1"]);
    assert.match(String(line.time), /^\d{4}-\d\d-\d\dT/);
  }
  assert.deepEqual([lines[0].level, lines[0].msg, lines[0].queueDepth], ["info", "enqueued", 3]);
  assert.deepEqual(lines[1].err, { name: "Error", message: "boom" });
  assert.equal(lines[2].requestId, undefined);
});

Deno.test("lines below the configured level are dropped", () => {
  const { logger, lines } = capture("warn");
  logger.debug("d");
  logger.child({ requestId: "r" }).info("i");
  logger.warn("w");
  assert.deepEqual(lines.map((l) => l.msg), ["w"]);
});

Deno.test("lines of one turn reach the writer together, in order, once the turn is over", async () => {
  const writes: string[] = [];
  const logger = createLogger("info", {}, linesPerTurn((text) => writes.push(text)));
  logger.info("a");
  logger.info("b");
  assert.equal(writes.length, 0, "nothing is written within the turn");
  await new Promise((resolve) => setTimeout(resolve, 0));
  logger.info("c");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(
    writes.map((text) => text.split("\n").map((line) => JSON.parse(line).msg)),
    [["a", "b"], ["c"]],
  );
});

Deno.test("flush writes the lines still waiting, at once", () => {
  const writes: string[] = [];
  const lines = linesPerTurn((text) => writes.push(text));
  const logger = createLogger("info", {}, lines);
  logger.error("dying");
  lines.flush();
  assert.deepEqual(writes.map((text) => JSON.parse(text).msg), ["dying"]);
  lines.flush();
  assert.equal(writes.length, 1, "nothing left to write");
});
