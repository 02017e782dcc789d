/**
 * The hook through which every generated text passes on its way to the client
 * (the output safety scanner plugs in here). A filter sees one text field of
 * one request (`content`, `reasoning`, or one call's `arguments`) as it streams: it may hold text back
 * (e.g. a holdback buffer as long as the longest banned phrase), rewrite it,
 * or block, which ends the response with finish_reason `content_filter`.
 */
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";

export interface FilterStep {
  /** Text that may be released to the client now. */
  text: string;
  /** True: stop here; nothing after `text` is sent and the generation is cancelled. */
  blocked: boolean;
}

export interface OutputFilter {
  /** Takes the next piece of generated text. */
  push(text: string): FilterStep;
  /** Generation ended normally: releases whatever is still held back. */
  end(): FilterStep;
}

/** `arguments`: one function call's arguments (a filter per call). */
export type TextField = "content" | "reasoning" | "arguments";

/** Makes the filter for one field of one request; `undefined` lets the text through untouched. */
export type OutputFilterFactory = (c: Context<AppEnv>, field: TextField) => OutputFilter | undefined;
