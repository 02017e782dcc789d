/**
 * Minimal server-sent-events reader for OpenAI streams: yields each `data:`
 * payload as it arrives, with the time it arrived. Comment lines go to
 * `onComment` (without the leading colon), if given, and are skipped otherwise.
 */
export async function* readSse(
  body: AsyncIterable<Uint8Array>,
  onComment?: (comment: string) => void,
): AsyncGenerator<{ data: string; at: number }> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body) {
    const at = performance.now();
    // SSE allows CRLF line ends; normalise so "\n\n" always ends an event.
    buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const lines = event.split("\n");
      if (onComment) for (const l of lines) if (l.startsWith(":")) onComment(l.slice(1).trimStart());
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (data.length > 0) yield { data: data.join("\n"), at };
    }
  }
}
