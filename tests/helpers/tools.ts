/** The customer-service function the tool-calling suites (end to end, browser) offer the model. */
import type OpenAI from "openai";

export const GET_ORDER_TOOL: OpenAI.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_order",
    description: "Looks up an order by its id.",
    parameters: {
      type: "object",
      properties: { order_id: { type: "string" } },
      required: ["order_id"],
    },
  },
};
