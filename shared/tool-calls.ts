/**
 * Function calls travel as deltas (`ToolCallDelta`: the first piece of a call
 * names it, later pieces extend its arguments). These join them: into whole
 * calls (a response, a resumed stream), or into fewer deltas (one publish).
 */
import type { ToolCall, ToolCallDelta } from "./protocol.ts";

/** Adds `deltas` to the calls in `calls` (by index), in place. */
export function accumulateToolCalls(calls: ToolCall[], deltas: readonly ToolCallDelta[]): void {
  for (const delta of deltas) {
    const call = calls[delta.index];
    if (call === undefined) {
      calls[delta.index] = {
        id: delta.id ?? "",
        name: delta.name ?? "",
        arguments: delta.arguments,
      };
    } else {
      call.arguments += delta.arguments;
    }
  }
}

/** Appends `delta` to `pending`, joining it with the last delta when both belong to one call. */
export function coalesceToolCallDelta(pending: ToolCallDelta[], delta: ToolCallDelta): void {
  const last = pending.at(-1);
  if (last !== undefined && last.index === delta.index && delta.id === undefined) {
    last.arguments += delta.arguments;
  } else {
    pending.push({ ...delta });
  }
}
