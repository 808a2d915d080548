// A strict reader of the Prometheus text exposition format 0.0.4 (the format's spec: one
// "# HELP name text" and "# TYPE name type" per family before its samples; sample lines
// `name{label="value",...} value [timestamp]`; histograms with cumulative _bucket{le=...}
// series ending in le="+Inf", equal to _count, plus _sum). Throws on the first bad line.
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
  /** The value of one series (labels matched exactly), or undefined. */
  value(name: string, labels?: Record<string, string>): number | undefined;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** Values are Go ParseFloat syntax, which takes NaN and Inf in any case (prom-client writes "Nan"). */
function parseValue(s: string, line: number): number {
  if (/^\+?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`line ${line}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function parseLabels(s: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const eq = s.indexOf("=", i);
    if (eq < 0) throw new Error(`line ${line}: label without '='`);
    const name = s.slice(i, eq);
    if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`);
    if (s[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`);
    let j = eq + 2;
    let v = "";
    for (;;) {
      if (j >= s.length) throw new Error(`line ${line}: unterminated label value`);
      const c = s[j]!;
      if (c === "\\") {
        const n = s[j + 1];
        if (n === "n") v += "\n";
        else if (n === "\\" || n === '"') v += n;
        else throw new Error(`line ${line}: bad escape \\${n}`);
        j += 2;
        continue;
      }
      if (c === '"') break;
      v += c;
      j++;
    }
    if (name in out) throw new Error(`line ${line}: label ${name} twice`);
    out[name] = v;
    i = j + 1;
    if (s[i] === ",") i++;
    else if (i < s.length) throw new Error(`line ${line}: expected ',' between labels`);
  }
  return out;
}

export function parseExposition(text: string): Exposition {
  if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const samples: Sample[] = [];
  const lines = text.split("\n").slice(0, -1);
  lines.forEach((l, idx) => {
    const line = idx + 1;
    if (l === "") return;
    if (l.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(l);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m;
      if (!NAME.test(name!)) throw new Error(`line ${line}: bad metric name ${name}`);
      if (kind === "TYPE") {
        if (!TYPES.has(rest!)) throw new Error(`line ${line}: bad type ${rest}`);
        if (types.has(name!)) throw new Error(`line ${line}: TYPE of ${name} twice`);
        if (samples.some((s) => s.name === name)) throw new Error(`line ${line}: TYPE of ${name} after its samples`);
        types.set(name!, rest!);
      } else {
        if (helped.has(name!)) throw new Error(`line ${line}: HELP of ${name} twice`);
        helped.add(name!);
      }
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(l);
    if (!m) throw new Error(`line ${line}: not a sample line: ${JSON.stringify(l)}`);
    samples.push({ name: m[1]!, labels: m[3] ? parseLabels(m[3], line) : {}, value: parseValue(m[4]!, line) });
  });
  // Histograms: buckets cumulative, +Inf present and equal to _count.
  for (const [name, type] of types) {
    if (type !== "histogram") continue;
    const series = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name === `${name}_bucket`)) {
      const { le, ...rest } = s.labels;
      if (le === undefined) throw new Error(`${name}_bucket without le`);
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      let prev = -1;
      for (const b of buckets) {
        if (b.value < prev) throw new Error(`${name}${key}: buckets not cumulative`);
        prev = b.value;
      }
      const inf = buckets.at(-1)!;
      if (inf.labels.le !== "+Inf") throw new Error(`${name}${key}: last bucket is not +Inf`);
      const count = samples.find((s) => s.name === `${name}_count` && JSON.stringify(s.labels) === key);
      if (!count || count.value !== inf.value) throw new Error(`${name}${key}: _count does not equal the +Inf bucket`);
      if (!samples.some((s) => s.name === `${name}_sum` && JSON.stringify(s.labels) === key)) throw new Error(`${name}${key}: no _sum`);
    }
  }
  for (const s of samples) {
    const family = types.has(s.name) ? s.name : s.name.replace(/_(bucket|count|sum|total|created)$/, "");
    if (!types.has(family) && !types.has(s.name)) throw new Error(`sample ${s.name} has no TYPE`);
  }
  const value = (name: string, labels: Record<string, string> = {}): number | undefined =>
    samples.find((s) => s.name === name && Object.keys(s.labels).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  return { types, samples, value };
}
