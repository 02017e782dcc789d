/**
 * One socket write per event-loop turn on a Redis connection, instead of one per command.
 *
 * ioredis writes every command to its socket as it is issued. On loopback each write is a
 * syscall that also runs the receiver's TCP processing, and under Deno each goes through the
 * `node:net` layer: at 256 streams the gateway's command writes (`writeUtf8String`) were 12 %
 * of its CPU, ~30 µs each, for the 7 commands of a request plus the subscriber's. Corking the
 * socket at the first write of a turn and uncorking it once the turn is over hands Node's (and
 * Deno's) stream everything written meanwhile as one `writev`. Order is unchanged, so ioredis's
 * reply matching is too; a command waits at most for the rest of the turn it was issued in.
 *
 * ioredis's own `enableAutoPipelining` batches the same way but builds a Pipeline per batch,
 * which copies every loaded script onto it (BullMQ's ~50), and measured no cheaper.
 *
 * A caller that issued commands and is about to run a long synchronous stretch (the gateway's
 * input filter) sends them at once with `sendBatchedWrites`: the turn would hold them until the
 * stretch is over, and their replies could not arrive meanwhile.
 *
 * Runs under Deno (gateway) and Node (worker): only `node:` APIs.
 */
import type { Socket } from "node:net";
import { setImmediate } from "node:timers";
import type { Redis } from "ioredis";

/** Sends what a batched socket holds, ahead of the turn's end. */
const senders = new WeakMap<Socket, () => void>();

/** Corks `socket` on its first write of a turn and uncorks it when the turn ends. */
function batchWritesPerTurn(socket: Socket): void {
  const write = socket.write;
  let corked = false;
  // Once per cork: a batch sent early leaves its end-of-turn call nothing to do.
  const uncork = () => {
    if (!corked) return;
    corked = false;
    socket.uncork();
  };
  senders.set(socket, uncork);
  socket.write = function (this: Socket, ...args: Parameters<Socket["write"]>) {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    return write.apply(this, args);
  } as Socket["write"];
}

function socketOf(redis: Redis): Socket | undefined {
  return (redis as unknown as { stream?: Socket }).stream;
}

/** Batches `redis`'s command writes per turn, on every socket it connects (reconnects too). */
export function batchRedisWrites(redis: Redis): Redis {
  // ioredis opens a new socket on each (re)connect and emits "connect" once it is up; the few
  // commands of its own handshake may go out unbatched.
  const batchCurrentSocket = () => {
    const socket = socketOf(redis);
    if (socket) batchWritesPerTurn(socket);
  };
  if (redis.status === "connect" || redis.status === "ready") batchCurrentSocket();
  redis.on("connect", batchCurrentSocket);
  return redis;
}

/** Sends the commands `redis` has batched this turn now, instead of when the turn ends. */
export function sendBatchedWrites(redis: Redis): void {
  const socket = socketOf(redis);
  if (socket) senders.get(socket)?.();
}
