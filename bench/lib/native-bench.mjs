// What the native-engine benchmarks share: running the built tools, the
// generated bench models, the printed table and the JSON under bench/results/.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { fileURLToPath } from "node:url";

export const root = fileURLToPath(new URL("../..", import.meta.url));

/** `--name N` from the command line, else `fallback`. */
export function numberArg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Runs a command to completion; its stdout, or an Error with its stderr. */
export function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

/** gptoss-cli with `args` and --json: its JSON report. */
export function cliReport(args) {
  const out = run(`${root}native/build/gptoss-cli`, [...args, "--quiet", "--json"]);
  return JSON.parse(out.trim().split("\n").at(-1));
}

/** The generated checkpoint `.models/bench-<name>`, made once by gptoss-gen-model with `genArgs`. */
export function ensureModel({ name, genArgs }) {
  const dir = `${root}.models/bench-${name}`;
  if (!existsSync(`${dir}/config.json`)) {
    mkdirSync(`${root}.models`, { recursive: true });
    run(`${root}native/build/gptoss-gen-model`, [...genArgs, "--out", dir]);
  }
  return dir;
}

/** Prints `rows` (arrays of cells) under `header`, in aligned columns. */
export function printTable(header, rows) {
  const table = rows.map((row) => row.map(String));
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  console.log(line(header));
  for (const row of table) console.log(line(row));
}

/** Writes bench/results/<bench>.json with the date and the machine, and says so. */
export function writeResult(bench, fields) {
  mkdirSync(`${root}bench/results`, { recursive: true });
  const result = {
    bench,
    date: new Date().toISOString(),
    machine: { host: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model },
    ...fields,
  };
  writeFileSync(`${root}bench/results/${bench}.json`, JSON.stringify(result, null, 2) + "\n");
  console.log(`\nwrote bench/results/${bench}.json`);
}
