// A node:test reporter (used by test/run-tests.sh next to the spec reporter) that makes sure
// every test file handed to the runner contributed at least one real test.
//
// What node:test (Node 20, one child process per file) does on its own: a file that throws
// while loading, or whose import fails, shows up as one failed test named after the file, and
// the run exits non-zero. But a file that registers no test at all (a loop over an empty
// fixture folder, an early process.exit(0), a describe() body that returns before its tests)
// shows up as one *passing* test named after the file: its cases vanish from the totals and
// the run stays green. This reporter counts, per file, the tests that are not that synthetic
// file-level entry, and fails the run (exit code 1, with the file named) for every file that
// ran none: every file the runner reported, and every file listed in RINGEDGE_TEST_FILES
// (newline-separated paths, set by run-tests.sh), so a file the runner never reported at all
// fails too.
//
// Plain JavaScript: node loads --test-reporter modules before the tsx loader is in place.
import path from "node:path";

/** @param {AsyncIterable<import("node:test/reporters").TestEvent>} source */
export default async function* everyFileReporter(source) {
  const expected = (process.env.RINGEDGE_TEST_FILES ?? "")
    .split("\n")
    .filter((f) => f !== "")
    .map((f) => path.resolve(f));
  /** @type {Map<string, number>} */
  const testsPerFile = new Map();
  // Whole-run totals of tests (suites not counted), for the plain closing line below.
  let passed = 0;
  let failed = 0;
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    if (event.data.details?.type !== "suite") event.type === "test:pass" ? passed++ : failed++;
    const file = event.data.file;
    if (file === undefined) continue;
    const abs = path.resolve(file);
    // The runner's stand-in for a whole file is named after the file itself.
    const real = event.data.name !== file && event.data.name !== abs;
    testsPerFile.set(abs, (testsPerFile.get(abs) ?? 0) + (real ? 1 : 0));
  }
  const all = [...new Set([...expected, ...testsPerFile.keys()])].sort();
  const missing = all.filter((f) => (testsPerFile.get(f) ?? 0) === 0);
  // The plain closing line any CI reads: "N passed, N failed" alone on a line.
  const closing = `tests: ${passed} passed, ${failed + missing.length} failed\n`;
  if (missing.length === 0) {
    yield `every-file check: all ${all.length} test files ran tests\n`;
    yield closing;
    return;
  }
  process.exitCode = 1;
  for (const f of missing) {
    const why = testsPerFile.has(f) ? "ran no test (it failed to load, exited early or registered none)" : "never reported by the runner";
    yield `every-file check FAILED: ${path.relative(process.cwd(), f)}: ${why}\n`;
  }
  yield `every-file check: ${missing.length} of ${all.length} test files ran no test; the run fails\n`;
  yield closing;
}
