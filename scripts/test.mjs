#!/usr/bin/env node
// `npm test`: every suite of the project, in dependency order, with one
// closing line that counts them all. Each suite's own output is shown as it runs.
//
//   native   C++ unit and reference tests (ctest)
//   node     worker, native binding and end-to-end tests (node:test through tsx)
//   deno     gateway unit tests (deno test)
//
// `npm test -- --only=node` runs one suite; extra arguments after it go to that runner.
// Before anything starts, the system packages the chosen tests need are checked
// (scripts/lib/system-requirements.mjs): a missing one stops the run at once.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { buildNative } from "./build-native.mjs";
import { ensureTinyModel } from "./tiny-model.mjs";
import { buildUi } from "./build-ui.mjs";
import { missingMessage, missingRequirements } from "./lib/system-requirements.mjs";

const root = new URL("..", import.meta.url).pathname;
const only = process.argv.find((a) => a.startsWith("--only="))?.slice(7);
const extra = process.argv.slice(2).filter((a) => !a.startsWith("--only="));

function run(cmd, args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const relay = (stream, sink) =>
      stream.on("data", (d) => {
        out += d;
        sink.write(d);
      });
    relay(child.stdout, process.stdout);
    relay(child.stderr, process.stderr);
    child.on("close", (code) => resolve({ code: code ?? 1, out }));
  });
}

/** Test files named *.test.ts under `dirs` (Node 20's --test takes no globs). */
function findTests(dirs) {
  const found = [];
  const walk = (dir) => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && entry.name !== "node_modules" && entry.name !== "build") walk(path);
      else if (entry.isFile() && entry.name.endsWith(".test.ts")) found.push(path);
    }
  };
  for (const dir of dirs) if (existsSync(join(root, dir))) walk(dir);
  return found.sort();
}

const suites = {
  async native() {
    const { code, out } = await run("ctest", ["--test-dir", "native/build", "--output-on-failure", ...extra]);
    const m = out.match(/(\d+)% tests passed, (\d+) tests failed out of (\d+)/);
    const failed = m ? Number(m[2]) : 1;
    return { passed: m ? Number(m[3]) - failed : 0, failed: code !== 0 && failed === 0 ? 1 : failed };
  },
  async node() {
    const files = extra.length > 0 ? extra : findTests(["tests", "worker", "native/node", "bench", "scripts"]);
    const { code, out } = await run("node", ["--import", "tsx", "--test", "--test-concurrency=1", ...files]);
    const passed = Number(out.match(/^(?:ℹ|#) pass (\d+)/m)?.[1] ?? 0);
    const failed = Number(out.match(/^(?:ℹ|#) fail (\d+)/m)?.[1] ?? (code === 0 ? 0 : 1));
    return { passed, failed: code !== 0 && failed === 0 ? 1 : failed };
  },
  async deno() {
    const { code, out } = await run("node_modules/.bin/deno", [
      "test", "--allow-all", "--no-check=remote", ...(extra.length > 0 ? extra : ["gateway/", "shared/"]),
    ]);
    const m = out.match(/(\d+) passed.*?\| (\d+) failed/);
    const failed = m ? Number(m[2]) : (code === 0 ? 0 : 1);
    return { passed: m ? Number(m[1]) : 0, failed: code !== 0 && failed === 0 ? 1 : failed };
  },
};

// The node suite's files decide which test-only packages are needed (all of them by default).
const nodeTestFiles = only !== undefined && only !== "node" ? [] : extra.length > 0 ? extra : undefined;
const missing = missingMessage(missingRequirements(nodeTestFiles));
if (missing !== undefined) {
  console.error(`npm test: ${missing}`);
  process.exit(1);
}

await buildNative();
await ensureTinyModel();
await buildUi();

let passed = 0;
let failed = 0;
for (const [name, suite] of Object.entries(suites)) {
  if (only && only !== name) continue;
  console.log(`\n=== ${name} tests ===`);
  const r = await suite();
  console.log(`=== ${name}: ${r.passed} passed, ${r.failed} failed ===`);
  passed += r.passed;
  failed += r.failed;
}
console.log(`\ntotal: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
