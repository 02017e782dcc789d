// The grammar thread's entry: a worker thread starts without tsx's loader even when the process
// has it (`node --import tsx`), so it registers the loader, then loads the TypeScript thread.
import { register } from "tsx/esm/api";

register();
await import("./grammar-thread.ts");
