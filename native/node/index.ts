/**
 * NativeEngine: the Engine interface (types.ts) over the N-API addon built at
 * native/build/gptoss_node.node. The addon calls back once per engine step
 * with that step's events for every request; this class hands each request
 * its own slice of the step, in order, in one call.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type {
  Engine,
  EngineError,
  EngineOptions,
  EngineSampling,
  EngineEventsListener,
  EngineStats,
  EngineTokenEvent,
  ModelInfo,
} from "./types.ts";
import { timelineNow } from "../../shared/timeline.ts";

export const ADDON_PATH = fileURLToPath(new URL("../build/gptoss_node.node", import.meta.url));

interface AddonEvent extends EngineTokenEvent {
  id: number;
}

interface AddonEngine {
  readonly modelInfo: ModelInfo;
  submit(prompt: Int32Array | number[], sampling: EngineSampling, fairnessKey?: string, cacheSalt?: string): number;
  cancel(id: number): boolean;
  setTokenMask(id: number, position: number, mask: Int32Array | Uint32Array): void;
  stats(): EngineStats;
  close(): Promise<void>;
}

/** `stepAtMs`: when the engine thread handed the step over, on CLOCK_MONOTONIC (process.hrtime's). */
type OnStep = (events: AddonEvent[], stepAtMs: number) => void;

interface Addon {
  Engine: new (options: EngineOptions, onStep: OnStep) => AddonEngine;
  createEngine(options: EngineOptions, onStep: OnStep): Promise<AddonEngine>;
}

let addon: Addon | undefined;

function loadAddon(): Addon {
  if (addon) return addon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as Addon;
  } catch (cause) {
    const error = new Error(
      `native engine addon not loadable from ${ADDON_PATH}; build it with \`node scripts/build-native.mjs\``,
      { cause },
    ) as EngineError;
    error.code = "backend";
    throw error;
  }
  return addon;
}

/** Routes each engine step's events to the requests' own callbacks. */
class StepDispatcher {
  readonly #listeners = new Map<number, EngineEventsListener>();

  listen(id: number, onEvents: EngineEventsListener): void {
    this.#listeners.set(id, onEvents);
  }

  readonly dispatch = (events: AddonEvent[], stepAtMs: number): void => {
    // The engine's monotonic stamp on the timeline clock: how long ago, read on both clocks now.
    const stepAt = timelineNow() - (Number(process.hrtime.bigint()) / 1e6 - stepAtMs);
    const byRequest = new Map<number, EngineTokenEvent[]>();
    for (const { id, ...event } of events) {
      const list = byRequest.get(id);
      if (list) list.push(event);
      else byRequest.set(id, [event]);
    }
    let firstError: unknown;
    for (const [id, list] of byRequest) {
      const listener = this.#listeners.get(id);
      if (list[list.length - 1].finish !== undefined) this.#listeners.delete(id);
      try {
        listener?.(list, stepAt);
      } catch (error) {
        firstError ??= error;
      }
    }
    // One request's failing callback must not cost the others their events;
    // its error is rethrown outside the addon's callback, as an ordinary
    // uncaught exception.
    if (firstError !== undefined) queueMicrotask(() => { throw firstError; });
  };
}

/** An engine started by `NativeEngine.create`, not yet wrapped. */
interface StartedEngine {
  engine: AddonEngine;
  dispatcher: StepDispatcher;
}

export class NativeEngine implements Engine {
  readonly modelInfo: ModelInfo;
  readonly #engine: AddonEngine;
  readonly #dispatcher: StepDispatcher;

  /**
   * Loads the model on this thread and starts the engine; throws EngineError.
   * `started` is internal to `create`.
   */
  constructor(options: EngineOptions, started?: StartedEngine) {
    this.#dispatcher = started?.dispatcher ?? new StepDispatcher();
    this.#engine = started?.engine ?? new (loadAddon().Engine)(options, this.#dispatcher.dispatch);
    this.modelInfo = this.#engine.modelInfo;
  }

  /** Loads the model off the event loop; rejects with EngineError. */
  static async create(options: EngineOptions): Promise<NativeEngine> {
    const dispatcher = new StepDispatcher();
    const engine = await loadAddon().createEngine(options, dispatcher.dispatch);
    return new NativeEngine(options, { engine, dispatcher });
  }

  submit(
    promptTokenIds: ArrayLike<number>,
    sampling: EngineSampling,
    onEvents: EngineEventsListener,
    fairnessKey?: string,
    cacheSalt?: string,
  ): number {
    const prompt = promptTokenIds instanceof Int32Array ? promptTokenIds : Array.from(promptTokenIds);
    const id = this.#engine.submit(prompt, sampling, fairnessKey, cacheSalt);
    // Events for `id` arrive on this thread through a later callback, never before this line.
    this.#dispatcher.listen(id, onEvents);
    return id;
  }

  cancel(id: number): boolean {
    return this.#engine.cancel(id);
  }

  setTokenMask(id: number, position: number, mask: Int32Array | Uint32Array): void {
    this.#engine.setTokenMask(id, position, mask);
  }

  stats(): EngineStats {
    return this.#engine.stats();
  }

  close(): Promise<void> {
    return this.#engine.close();
  }
}
