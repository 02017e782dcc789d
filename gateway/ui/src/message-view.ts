/**
 * One message on screen. A user message is plain text; an assistant message has
 * its reasoning collapsed above the Markdown answer, the functions it called
 * (name and arguments as written), a notice when it is incomplete, and its
 * timing underneath; a tool result shows the function it answers. `update`
 * re-renders in place while the answer streams.
 */
import { el } from "./dom.ts";
import { renderMarkdown } from "./render-markdown.ts";
import type { MessageStats, StoredMessage } from "./store.ts";

export interface MessageView {
  element: HTMLElement;
  update(message: StoredMessage, streaming?: boolean): void;
}

export function formatStats(stats: MessageStats): string {
  const parts = [`TTFT ${Math.round(stats.ttftMs)} ms`];
  if (stats.tokensPerSecond !== null) parts.push(`${stats.tokensPerSecond.toFixed(1)} tokens/s`);
  if (stats.completionTokens !== null) parts.push(`${stats.completionTokens} tokens`);
  return parts.join(" · ");
}

export function createMessageView(message: StoredMessage): MessageView {
  if (message.role === "user") {
    const element = el("article", { class: "message user", "aria-label": "You" }, el("div", { class: "text" }, message.content));
    return { element, update: () => {} };
  }
  if (message.role === "tool") {
    const element = el(
      "article",
      { class: "message tool", "aria-label": "Tool result" },
      el("div", { class: "tool-name" }, `${message.name ?? "tool"} returned`),
      el("pre", { class: "tool-output" }, message.content),
    );
    return { element, update: () => {} };
  }
  const reasoningText = el("div", { class: "reasoning-text" });
  const reasoning = el("details", { class: "reasoning" }, el("summary", {}, "Reasoning"), reasoningText);
  const content = el("div", { class: "content markdown" });
  const calls = el("div", { class: "tool-calls" });
  const notice = el("p", { class: "notice", role: "status" });
  const stats = el("footer", { class: "stats" });
  const element = el("article", { class: "message assistant", "aria-label": "Assistant" }, reasoning, content, calls, notice, stats);
  let renderedContent: string | null = null;

  const update = (m: StoredMessage, streaming = false) => {
    element.classList.toggle("streaming", streaming);
    reasoning.hidden = !m.reasoning;
    if (reasoningText.textContent !== (m.reasoning ?? "")) reasoningText.textContent = m.reasoning ?? "";
    // Re-parsing the whole answer per update is cheap at chat sizes and keeps half-written Markdown right.
    if (renderedContent !== m.content) {
      renderMarkdown(content, m.content);
      renderedContent = m.content;
    }
    calls.hidden = !m.toolCalls?.length;
    calls.replaceChildren(...(m.toolCalls ?? []).map((call) =>
      el("div", { class: "tool-call" }, el("span", { class: "tool-name" }, `Calls ${call.name}`), el("pre", {}, call.arguments))
    ));
    notice.hidden = !m.notice;
    notice.className = `notice ${m.notice ? `notice-${m.notice.kind}` : ""}`;
    notice.textContent = m.notice?.text ?? "";
    stats.hidden = !m.stats;
    stats.textContent = m.stats ? formatStats(m.stats) : "";
  };
  update(message);
  return { element, update };
}
