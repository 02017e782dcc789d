/**
 * The system-package check of `npm test`: which packages each choice of tests needs, that the
 * README's quick start installs exactly the list, and that a machine missing one stops the run at
 * once with the install line, before anything is built.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT } from "./local-stack.ts";
import { INSTALL_LINE, missingRequirements, REQUIREMENTS } from "./system-requirements.mjs";

test("the README's quick start installs exactly the packages of the list", () => {
  const readme = readFileSync(`${ROOT}README.md`, "utf8");
  const quickStart = readme.slice(readme.indexOf("## Quick start"), readme.indexOf("## Layout"));
  const lines = quickStart.split("\n").filter((l) => l.includes("apt-get install"));
  assert.deepEqual(lines, [INSTALL_LINE]);
});

test("test files need only their own folder's packages; --only=native or deno needs none of them", () => {
  // A machine with none of the test-only packages: what is reported is what the tests ask for.
  const testOnly = REQUIREMENTS.filter((r) => r.testsIn !== undefined);
  const onlyStartPresent = (r: { testsIn?: string[] }) => r.testsIn === undefined;
  const names = (paths?: string[]) => missingRequirements(paths, onlyStartPresent).map((r) => r.what);
  assert.deepEqual(names([]), []);
  assert.deepEqual(names(["worker/x.test.ts", "gateway/x_test.ts"]), []);
  assert.deepEqual(names(["tests/e2e/chat.test.ts"]), ["python3 with yaml", "python3 with jsonschema"]);
  assert.deepEqual(names(["tests/browser/chat.test.ts"]), ["chromium (/usr/bin/chromium)"]);
  assert.deepEqual(names(["./tests/deploy/compose.test.ts"]), ["python3 with yaml", "python3 with jsonschema", "docker-compose"]);
  assert.deepEqual(names(), testOnly.map((r) => r.what));
});

test("npm test on a machine without a compiler stops at once, naming it and the install line", () => {
  // A PATH holding only node, sh and python3: g++, cmake and redis-server are missing.
  const bin = mkdtempSync(join(tmpdir(), "no-compiler-"));
  try {
    for (const tool of ["sh", "python3"]) {
      const found = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
      symlinkSync(found, join(bin, tool));
    }
    symlinkSync(process.execPath, join(bin, "node"));
    const run = spawnSync(process.execPath, ["scripts/test.mjs", "--only=deno"], {
      cwd: ROOT,
      env: { ...process.env, PATH: bin },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /^npm test: missing system packages: g\+\+, cmake, redis-server\.$/m);
    assert.ok(run.stderr.includes(`\n  ${INSTALL_LINE}\n`), run.stderr);
    assert.equal(run.stdout, "", "nothing was built or run");
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});
