// The agent's version: package.json's, bundled into dist/ by esbuild (a JSON import is inlined),
// so the shipped program names its version without reading any file at run time.
import pkg from "../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
