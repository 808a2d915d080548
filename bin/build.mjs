#!/usr/bin/env node
// Builds the agent as shipped: dist/ringedge.mjs (agent/main.ts) and dist/media-worker.mjs (the
// media worker thread, agent/media/worker.ts), each one ESM bundle with the npm packages left
// external, run by plain node through bin/ringedge. The one definition of how the bundle is made:
// `make build` runs this file; the shipped-bundle test and the register bench import it.
//
// Whitespace and comments are stripped (identifiers are kept, so stack traces still name their
// functions; a source map is written beside each bundle for reading their positions: run with
// RINGEDGE_NODE_FLAGS=--enable-source-maps). V8 keeps a script's whole source in the heap for
// as long as the script lives, and the sources' comments hold non-Latin-1 characters (§, →),
// which make it a two-byte string: the plain bundle cost 3.7 MB of heap, this one 1.3 MB
// (bench/README.md, the memory run).
//
// Usage: node bin/build.mjs [outDir]   (default: dist/ beside bin/)
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The esbuild options shared by both bundles. */
export const BUNDLE_OPTIONS = Object.freeze({
  bundle: true,
  platform: "node",
  format: "esm",
  packages: "external",
  target: "node20",
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "none",
  charset: "ascii",
  sourcemap: "linked",
  logLevel: "warning",
});

/** Builds both bundles into outDir; returns the agent bundle's path. */
export async function buildBundles(outDir = path.join(ROOT, "dist")) {
  const { build } = await import("esbuild");
  const agent = path.join(outDir, "ringedge.mjs");
  await build({ ...BUNDLE_OPTIONS, entryPoints: [path.join(ROOT, "agent", "main.ts")], outfile: agent });
  await build({ ...BUNDLE_OPTIONS, entryPoints: [path.join(ROOT, "agent", "media", "worker.ts")], outfile: path.join(outDir, "media-worker.mjs") });
  return agent;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  await buildBundles(process.argv[2] === undefined ? undefined : path.resolve(process.argv[2]));
}
