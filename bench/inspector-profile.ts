/**
 * A V8 CPU profile of another process that listens with `--inspect=127.0.0.1:PORT` (Deno or
 * Node), taken over the DevTools protocol: the gateway runs under Deno, which has no
 * `--cpu-prof`. The result is a `.cpuprofile` (Chrome DevTools, or `summarizeProfile`).
 * Needs a global WebSocket: Node 22+, or Node 20 with `--experimental-websocket`.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export class InspectorProfiler {
  #socket: WebSocket;
  #nextId = 1;
  readonly #replies = new Map<number, (result: unknown) => void>();

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(String(event.data));
      this.#replies.get(message.id)?.(message.result);
      this.#replies.delete(message.id);
    });
  }

  /** Connects to the first target the inspector at `port` lists. */
  static async connect(port: number): Promise<InspectorProfiler> {
    if (typeof WebSocket === "undefined") {
      throw new Error(
        "profiling needs a global WebSocket: run node with --experimental-websocket (Node 20)",
      );
    }
    const [target] = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("error", reject, { once: true });
    });
    return new InspectorProfiler(socket);
  }

  #send(method: string, params: object = {}): Promise<unknown> {
    const id = this.#nextId++;
    this.#socket.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve) => this.#replies.set(id, resolve));
  }

  /** Starts the CPU profiler and the sampling heap profiler (where the garbage comes from). */
  async start(): Promise<void> {
    await this.#send("Profiler.enable");
    await this.#send("Profiler.start");
    await this.#send("HeapProfiler.enable");
    // Every 64 KiB allocated on average, collected objects included: allocation, not retention.
    await this.#send("HeapProfiler.startSampling", {
      samplingInterval: 64 * 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }

  async stop(): Promise<{ cpu: CpuProfile; heap: HeapProfile }> {
    const { profile: cpu } = await this.#send("Profiler.stop") as { profile: CpuProfile };
    const { profile: heap } = await this.#send("HeapProfiler.stopSampling") as {
      profile: HeapProfile;
    };
    this.#socket.close();
    return { cpu, heap };
  }
}

interface HeapNode {
  callFrame: ProfileNode["callFrame"];
  selfSize: number;
  children: HeapNode[];
}
export interface HeapProfile {
  head: HeapNode;
}

/** Bytes allocated by function (self), largest first: what feeds the collector. */
export function summarizeHeap(profile: HeapProfile, top = 25): string {
  const bySelf = new Map<string, number>();
  let total = 0;
  const walk = (node: HeapNode) => {
    const { fn } = label(node.callFrame);
    bySelf.set(fn, (bySelf.get(fn) ?? 0) + node.selfSize);
    total += node.selfSize;
    node.children.forEach(walk);
  };
  walk(profile.head);
  const rows = [...bySelf].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([fn, bytes]) =>
      `${(bytes / 2 ** 20).toFixed(1).padStart(8)} MiB ${
        (100 * bytes / total).toFixed(1).padStart(5)
      } %  ${fn}`
    );
  return `sampled allocation ${(total / 2 ** 20).toFixed(0)} MiB\n-- allocated by function\n${
    rows.join("\n")
  }`;
}

/** A call frame as `function script:line`, and its script (node_modules packages as one). */
function label(frame: ProfileNode["callFrame"]): { fn: string; script: string } {
  const url = frame.url.replace(/^.*node_modules\//, "npm:").replace(
    /^file:\/\/.*?\/(gateway|shared|bench|worker)\//,
    "$1/",
  );
  const script = url.startsWith("npm:")
    ? url.split("/").slice(0, url.startsWith("npm:@") ? 2 : 1).join("/")
    : url || "(native)";
  return { fn: `${frame.functionName || "(anonymous)"} ${url}:${frame.lineNumber + 1}`, script };
}

/**
 * Where a profile's busy time went: self time by script (node_modules packages as one) and by
 * function, and total (self + callees) time of the project's own functions; idle excluded.
 */
export function summarizeProfile(profile: CpuProfile, top = 25): string {
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) =>
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  );
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const idle = new Set(["(idle)", "(program)"]);
  const bySelf = new Map<string, number>();
  const byScript = new Map<string, number>();
  const byTotal = new Map<string, number>();
  let busy = 0;
  const walk = (id: number, onStack: Set<string>): number => {
    const node = byId.get(id)!;
    if (idle.has(node.callFrame.functionName)) return 0;
    const { fn, script } = label(node.callFrame);
    const self = selfUs.get(id) ?? 0;
    busy += self;
    bySelf.set(fn, (bySelf.get(fn) ?? 0) + self);
    byScript.set(script, (byScript.get(script) ?? 0) + self);
    const fresh = !onStack.has(fn);
    if (fresh) onStack.add(fn);
    let total = self;
    for (const child of node.children ?? []) total += walk(child, onStack);
    if (fresh) {
      onStack.delete(fn);
      if (/^[a-z]+\//.test(script) && !script.startsWith("npm:")) {
        byTotal.set(fn, (byTotal.get(fn) ?? 0) + total);
      }
    }
    return total;
  };
  walk(profile.nodes[0].id, new Set());
  const table = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top)
      .map(([k, us]) =>
        `${(us / 1000).toFixed(0).padStart(7)} ms ${
          (100 * us / busy).toFixed(1).padStart(5)
        } %  ${k}`
      ).join("\n");
  return `busy ${(busy / 1000).toFixed(0)} ms\n-- self time by script\n${
    table(byScript)
  }\n-- self time by function\n${table(bySelf)}\n-- total time of the project's functions\n${
    table(byTotal)
  }`;
}
