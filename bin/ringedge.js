#!/usr/bin/env node
// The `ringedge` command for development and tests: loads the TypeScript sources through tsx
// (resolved from this package, not the caller's cwd). `make build` makes dist/ringedge.mjs,
// the same program as one plain-JS bundle, which is what `make run` and the appliance use.
//
// tsx transforms synchronously; by default esbuild serves synchronous calls from a worker
// thread the caller waits on with Atomics.wait, and that wait can hang for good on a loaded
// machine (a CLI run that never prints or exits). ESBUILD_WORKER_THREADS=0 selects esbuild's
// per-call synchronous path instead. esbuild reads it when it loads, so tsx is imported after.
process.env.ESBUILD_WORKER_THREADS ??= "0";
const { register } = await import("tsx/esm/api");
register();
await import("../agent/main.ts");
