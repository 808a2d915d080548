#!/usr/bin/env node
// The `ringedge` command for development and tests: loads the TypeScript sources through tsx
// (resolved from this package, not the caller's cwd). `make build` makes dist/ringedge.mjs,
// the same program as one plain-JS bundle, which is what `make run` and the appliance use.
import { register } from "tsx/esm/api";
register();
await import("../agent/main.ts");
