/**
 * The body of an event-stream response: text the relay writes, bytes Deno's HTTP server reads.
 *
 * One ReadableStream fed through its controller. Hono's `streamSSE` puts a TransformStream and a
 * second ReadableStream that pulls from it between the two: three streams, a reader and a writer
 * per response, and a few promise hops per write; at 256 streams the web streams' code was the
 * gateway's third-largest script by self time. A write resolves at once when the server was
 * waiting for it, else once the server has taken it and asks for more: a client that does not
 * read holds the write (the backpressure the slow-client check watches), as it held a write to
 * the TransformStream.
 */
const encoder = new TextEncoder();

export class SSEBody {
  readonly stream: ReadableStream<Uint8Array>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  /** Settles when the server next reads: what the writes waiting on the client wait for. */
  #nextRead: { promise: Promise<void>; resolve: () => void } | undefined;
  #aborted = false;
  #closed = false;
  readonly #abortListeners: (() => void)[] = [];

  constructor() {
    this.stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => this.#release(),
      // The client went away.
      cancel: () => this.abort(),
    }, { highWaterMark: 0 });
  }

  /** The client went away, or the relay dropped it: nothing more is written. */
  get aborted(): boolean {
    return this.#aborted;
  }

  /** Writes `text`; resolves once the server has taken it, or the stream has ended. */
  write(text: string): Promise<void> {
    if (this.#aborted || this.#closed) return Promise.resolve();
    this.#controller.enqueue(encoder.encode(text));
    // Below zero: the chunk waits in the queue for the server's next read.
    if ((this.#controller.desiredSize ?? 0) >= 0) return Promise.resolve();
    this.#nextRead ??= Promise.withResolvers<void>();
    return this.#nextRead.promise;
  }

  onAbort(listener: () => void): void {
    this.#abortListeners.push(listener);
  }

  /** Ends the body without further events and tells the abort listeners; a pending write returns. */
  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#release();
    this.close();
    for (const listener of this.#abortListeners) listener();
  }

  /** Ends the body once what was written has been read. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#controller.close();
    } catch {
      // Already cancelled by the server: nothing left to end.
    }
  }

  #release(): void {
    this.#nextRead?.resolve();
    this.#nextRead = undefined;
  }
}
