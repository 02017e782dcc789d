/**
 * The worker process with the native engine (worker-process.ts has the rest).
 *
 *   node --import tsx worker/main.ts
 */
import { NativeEngine } from "../native/node/index.ts";
import { engineOptions } from "./engine-options.ts";
import { runWorkerProcess } from "./worker-process.ts";

await runWorkerProcess((config) => new NativeEngine(engineOptions(config)));
