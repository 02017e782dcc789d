// The system packages `npm start` and `npm test` need beyond Node: one list, read by
// scripts/test.mjs (which stops at once, naming what is missing and the install line), by .ci/run
// (which installs what is missing) and by the README's quick start (a test keeps its install line
// equal to INSTALL_LINE). `npm start` names redis-server itself when it needs one and none is there.
//
//   node scripts/lib/system-requirements.mjs            prints the Debian packages missing here
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { fileURLToPath } from "node:url";

const onPath = (command) => () => !spawnSync("sh", ["-c", `command -v ${command}`]).status;
const executable = (path) => () => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/**
 * `what` names the requirement in messages; `packages` are the Debian packages that provide it;
 * `testsIn` lists the test folders that need it, absent for what `npm start` (and so every test
 * run: it builds the engine and starts Redis) needs.
 */
export const REQUIREMENTS = [
  { what: "g++", packages: ["g++"], present: onPath("g++") },
  { what: "cmake", packages: ["cmake"], present: onPath("cmake") },
  { what: "redis-server", packages: ["redis-server"], present: onPath("redis-server") },
  // Playwright drives Debian's Chromium (tests/browser launches this path).
  {
    what: "chromium (/usr/bin/chromium)",
    packages: ["chromium", "chromium-driver"],
    testsIn: ["tests/browser"],
    present: executable("/usr/bin/chromium"),
  },
  // The compose and monitoring tests read YAML through Debian's python3-yaml, and so does the
  // OpenAPI check of the e2e suites (tests/helpers/openapi.ts).
  {
    what: "python3 with yaml",
    packages: ["python3-yaml"],
    testsIn: ["tests/monitoring", "tests/deploy", "tests/e2e"],
    present: () => spawnSync("python3", ["-c", "import yaml"]).status === 0,
  },
  // tests/helpers/openapi.ts checks responses against OpenAI's OpenAPI document with it; the
  // deploy tests check the Compose Specification with it.
  {
    what: "python3 with jsonschema",
    packages: ["python3-jsonschema"],
    testsIn: ["tests/e2e", "tests/deploy"],
    present: () => spawnSync("python3", ["-c", "import jsonschema"]).status === 0,
  },
  // `docker-compose config` without an engine, and the Compose Specification schema it ships,
  // checked with python3-jsonschema (one of its dependencies).
  { what: "docker-compose", packages: ["docker-compose"], testsIn: ["tests/deploy"], present: onPath("docker-compose") },
];

/** Every package of the list, in one line: the README's quick start shows exactly this. */
export const INSTALL_LINE = `sudo apt-get install -y ${REQUIREMENTS.flatMap((r) => r.packages).join(" ")}`;

/**
 * The requirements missing on this machine among those needed to start the stack and to run the
 * test files under `testPaths` (relative to the repository root; omitted: every test). `isPresent`
 * is for tests that play a machine lacking some.
 */
export function missingRequirements(testPaths, isPresent = (r) => r.present()) {
  const needed = (r) =>
    r.testsIn === undefined || testPaths === undefined ||
    testPaths.some((p) => r.testsIn.some((dir) => p.replace(/^\.\//, "").startsWith(`${dir}/`)));
  return REQUIREMENTS.filter((r) => needed(r) && !isPresent(r));
}

/** One message naming what is missing and the line that installs everything; undefined when none is. */
export function missingMessage(missing) {
  if (missing.length === 0) return undefined;
  return `missing system packages: ${missing.map((r) => r.what).join(", ")}.\n` +
    `Install everything npm start and npm test need with:\n\n  ${INSTALL_LINE}\n`;
}

if (fileURLToPath(import.meta.url) === process.argv[1]) {
  const packages = missingRequirements().flatMap((r) => r.packages);
  if (packages.length > 0) console.log(packages.join("\n"));
}
