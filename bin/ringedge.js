#!/usr/bin/env node
// The `ringedge` command: loads the TypeScript sources through tsx (resolved from this
// package, not the caller's cwd) and hands over to the CLI.
import { register } from "tsx/esm/api";
register();
const { main } = await import("../agent/cli.ts");
process.exitCode = await main(process.argv.slice(2));
