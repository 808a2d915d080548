// Process entry point: `node dist/ringedge.mjs <command>` (built by `make build`) and
// bin/ringedge.js (through tsx, for development and tests) both land here.
import { main } from "./cli.ts";

process.exitCode = await main(process.argv.slice(2));
