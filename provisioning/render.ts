// A tiny, logic-less template language for phone configuration files.
//
// Exactly three constructs, nothing more:
//   {{name}}                       a value, escaped for the output format
//   {{#each name}} … {{/each}}     repeat for each item of a list (item fields shadow outer names)
//   {{#if name}} … {{/if}}         include when the value is truthy
// A block tag alone on its line removes that whole line, so templates can be indented freely
// without leaving blank lines in the output.
//
// Fail closed: a name missing from the render context is an error naming the template and the
// variable; it never renders as an empty string (an empty SIP password must never slip out).
// Escaping is decided by the output format, never by the template author.

import { DEFAULT_PICKUP_CODE } from "../agent/site/types.ts";
import { DEFAULT_VOICEMAIL_CODE } from "../agent/presence/mwi.ts";
import type { FileKind, LineKeyType, ModelProfile, Profile, ProfileFile, Transport } from "./profiles.ts";

export type ConfigFormat = "yealink-kv" | "xml";

export type TemplateScalar = string | number | boolean;
export type TemplateItem = Readonly<Record<string, TemplateScalar>>;
export type TemplateValue = TemplateScalar | readonly TemplateItem[];
export type TemplateContext = Readonly<Record<string, TemplateValue>>;

type Node =
  | { kind: "text"; text: string }
  | { kind: "var"; name: string; line: number }
  | { kind: "each"; name: string; line: number; body: Node[] }
  | { kind: "if"; name: string; line: number; body: Node[] };

export interface CompiledTemplate {
  readonly name: string;
  readonly nodes: readonly Node[];
}

export interface TemplateError {
  code: "syntax" | "unknown-variable" | "type-mismatch" | "unsafe-value";
  template: string;
  variable?: string;
  line?: number;
  message: string;
}

export type CompileResult = { ok: true; template: CompiledTemplate } | { ok: false; error: TemplateError };
export type RenderTemplateResult = { ok: true; text: string } | { ok: false; error: TemplateError };

const NAME = "[A-Za-z_][A-Za-z0-9_]*";
const TAG_RE = new RegExp(`^\\s*(?:(#each|#if)\\s+(${NAME})|(/each|/if)|(${NAME}))\\s*$`);

interface RawTag {
  start: number; // offset of "{{"
  end: number; // offset after "}}"
  inner: string;
}

function lineOf(source: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < source.length; i++) if (source.charCodeAt(i) === 10) line++;
  return line;
}

/** Compile template text; syntax errors name the template and line. Never throws. */
export function compileTemplate(name: string, source: string): CompileResult {
  const fail = (message: string, offset: number): CompileResult => ({
    ok: false,
    error: { code: "syntax", template: name, line: lineOf(source, offset), message: `${name}:${lineOf(source, offset)}: ${message}` },
  });
  if (typeof source !== "string") return fail("template source is not text", 0);

  // Pass 1: find the tags.
  const tags: RawTag[] = [];
  let pos = 0;
  for (;;) {
    const open = source.indexOf("{{", pos);
    if (open < 0) break;
    const close = source.indexOf("}}", open + 2);
    if (close < 0) return fail("'{{' without a closing '}}'", open);
    const inner = source.slice(open + 2, close);
    if (inner.includes("{{")) return fail("nested '{{' inside a tag", open);
    tags.push({ start: open, end: close + 2, inner });
    pos = close + 2;
  }

  // Pass 2: build the tree, applying the standalone-line rule to block tags.
  const root: Node[] = [];
  const stack: Array<{ node: Extract<Node, { kind: "each" | "if" }>; open: string; offset: number }> = [];
  const current = (): Node[] => (stack.length ? stack[stack.length - 1]!.node.body : root);
  let cursor = 0;
  for (const tag of tags) {
    const m = TAG_RE.exec(tag.inner);
    if (!m) return fail(`unsupported tag '{{${tag.inner}}}' (only {{name}}, {{#each name}}, {{#if name}}, {{/each}}, {{/if}})`, tag.start);
    const isBlock = m[4] === undefined;
    let textEnd = tag.start;
    let nextCursor = tag.end;
    if (isBlock) {
      const lineStart = source.lastIndexOf("\n", tag.start - 1) + 1;
      const nl = source.indexOf("\n", tag.end);
      const lineEnd = nl < 0 ? source.length : nl + 1;
      const before = source.slice(lineStart, tag.start);
      const after = source.slice(tag.end, nl < 0 ? source.length : nl).replace(/\r$/, "");
      if (lineStart >= cursor && /^[ \t]*$/.test(before) && /^[ \t]*$/.test(after)) {
        textEnd = lineStart;
        nextCursor = lineEnd;
      }
    }
    if (textEnd > cursor) current().push({ kind: "text", text: source.slice(cursor, textEnd) });
    cursor = nextCursor;
    const line = lineOf(source, tag.start);
    if (m[4] !== undefined) {
      current().push({ kind: "var", name: m[4], line });
    } else if (m[1] !== undefined && m[2] !== undefined) {
      const node: Extract<Node, { kind: "each" | "if" }> =
        m[1] === "#each" ? { kind: "each", name: m[2], line, body: [] } : { kind: "if", name: m[2], line, body: [] };
      current().push(node);
      stack.push({ node, open: m[1], offset: tag.start });
    } else {
      const top = stack.pop();
      const want = m[3] === "/each" ? "#each" : "#if";
      if (!top) return fail(`'{{${m[3]}}}' without an opening tag`, tag.start);
      if (top.open !== want) return fail(`'{{${m[3]}}}' closes '{{${top.open} ${top.node.name}}}'`, tag.start);
    }
  }
  if (stack.length) {
    const top = stack[stack.length - 1]!;
    return fail(`'{{${top.open} ${top.node.name}}}' is never closed`, top.offset);
  }
  if (cursor < source.length) current().push({ kind: "text", text: source.slice(cursor) });
  return { ok: true, template: { name, nodes: root } };
}

/**
 * Names a template reads. `outer` are looked up in the top-level context; `inner` maps each
 * list name to the names read inside its loop (item fields or outer names).
 */
export interface TemplateRefs {
  outer: Set<string>;
  lists: Map<string, Set<string>>;
}

export function templateRefs(template: CompiledTemplate): TemplateRefs {
  const refs: TemplateRefs = { outer: new Set(), lists: new Map() };
  const walk = (nodes: readonly Node[], list: string | undefined): void => {
    for (const n of nodes) {
      if (n.kind === "text") continue;
      if (list === undefined) refs.outer.add(n.name);
      else {
        let s = refs.lists.get(list);
        if (!s) refs.lists.set(list, (s = new Set()));
        s.add(n.name);
      }
      if (n.kind === "each") walk(n.body, n.name);
      else if (n.kind === "if") walk(n.body, list);
    }
  };
  walk(template.nodes, undefined);
  return refs;
}

// XML 1.0 §2.2 Char production: these code points may not appear at all, escaped or not.
const XML_FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// Yealink reads one `key = value` per line: any line break (or other control character) in a
// value would start a new key, e.g. "Bob\naccount.1.password = x".
const KV_FORBIDDEN = /[\u0000-\u001F\u007F\u0085\u2028\u2029]/;

const XML_ESCAPES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&apos;",
  "\t": "&#9;",
  "\n": "&#10;",
  "\r": "&#13;",
};

/** Escape one value for the given format, or say why it cannot be represented safely. */
export function escapeValue(format: ConfigFormat, value: string): { ok: true; text: string } | { ok: false; message: string } {
  if (format === "xml") {
    if (XML_FORBIDDEN.test(value)) return { ok: false, message: "contains a character not allowed in XML 1.0" };
    // Escape every markup character so the same rule is safe in attributes and in text;
    // whitespace controls as character references survive attribute-value normalisation (XML §3.3.3).
    const text = value.replace(/[&<>"'\t\n\r]/g, (c) => XML_ESCAPES[c] ?? "");
    return { ok: true, text };
  }
  if (KV_FORBIDDEN.test(value)) return { ok: false, message: "contains a line break or control character, which would inject another key" };
  return { ok: true, text: value };
}

function truthy(v: TemplateValue): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "string") return v.length > 0;
  if (typeof v === "number") return v !== 0 && !Number.isNaN(v);
  return v === true;
}

/** Render a compiled template against a context. Never throws; the first problem is returned. */
export function renderTemplate(template: CompiledTemplate, context: TemplateContext, format: ConfigFormat): RenderTemplateResult {
  const out: string[] = [];
  const scopes: Array<Readonly<Record<string, TemplateValue>>> = [context];
  const err = (code: TemplateError["code"], n: { name: string; line: number }, message: string): RenderTemplateResult => ({
    ok: false,
    error: { code, template: template.name, variable: n.name, line: n.line, message: `${template.name}:${n.line}: ${message}` },
  });
  const lookup = (name: string): TemplateValue | undefined => {
    for (let i = scopes.length - 1; i >= 0; i--) {
      const scope = scopes[i]!;
      if (Object.prototype.hasOwnProperty.call(scope, name)) return scope[name];
    }
    return undefined;
  };
  const walk = (nodes: readonly Node[]): RenderTemplateResult | undefined => {
    for (const n of nodes) {
      if (n.kind === "text") {
        out.push(n.text);
        continue;
      }
      const v = lookup(n.name);
      if (v === undefined) return err("unknown-variable", n, `unknown variable '${n.name}'`);
      if (n.kind === "var") {
        if (typeof v === "boolean" || Array.isArray(v)) return err("type-mismatch", n, `'${n.name}' is a ${Array.isArray(v) ? "list" : "flag"}; use it with #each / #if`);
        const esc = escapeValue(format, String(v));
        if (!esc.ok) return err("unsafe-value", n, `value of '${n.name}' ${esc.message}`);
        out.push(esc.text);
      } else if (n.kind === "if") {
        if (truthy(v)) {
          const r = walk(n.body);
          if (r) return r;
        }
      } else {
        if (!Array.isArray(v)) return err("type-mismatch", n, `'${n.name}' is not a list`);
        for (const item of v as readonly TemplateItem[]) {
          scopes.push(item);
          const r = walk(n.body);
          scopes.pop();
          if (r) return r;
        }
      }
    }
    return undefined;
  };
  const failed = walk(template.nodes);
  return failed ?? { ok: true, text: out.join("") };
}

// =============================================================================================
// Rendering a phone's configuration file from its vendor profile.


export interface DeviceInput {
  mac: string;
  extension: string;
  displayName: string;
  sipUsername: string;
  sipPassword: string;
  /** Per-device HTTP Digest credentials for the provisioning server (provisioning.md §4.3). */
  provisioningUser: string;
  provisioningPassword: string;
}

export interface SiteInput {
  sipServer: string;
  sipPort: number;
  transport: Transport;
  ntpServer: string;
  /** IANA zone, e.g. "Europe/Berlin". Vendors get its standard UTC offset (see tz* names). */
  timeZone: string;
  /** Base URL the phones fetch their files from, e.g. "https://10.0.0.5/prov". */
  provisioningUrl: string;
  resyncIntervalMin: number;
  firmwareBaseUrl: string;
  /** URL of the site CA certificate, for phones that can install one from a URL. */
  caCertificateUrl?: string;
  /**
   * The site's call pickup code (settings.pickupCode, "*8" when absent). Phones dial it followed
   * by the extension of a blinking BLF key (directed pickup) where they do not pick up with an
   * INVITE carrying Replaces (RFC 3891).
   */
  pickupCode?: string;
  /**
   * The voicemail feature code (the agent's voicemailCode setting, "*97" when absent): the
   * phone's voicemail number / message key, and where phones that subscribe to the voicemail
   * number send their message-summary SUBSCRIBE (RFC 3842).
   */
  voicemailCode?: string;
}

export interface LineKeyInput {
  label: string;
  extension: string;
  type: LineKeyType;
}

export interface RenderConfigInput {
  profile: Profile;
  model: ModelProfile;
  fileKind: FileKind;
  /** Which file entry to render (from identify()); default: the first served file of fileKind. */
  file?: ProfileFile;
  /** Required for mac-boot and mac-config files. */
  device?: DeviceInput;
  site: SiteInput;
  /** Positional: lineKeys[0] is key 1. Keys beyond the model's count are dropped. */
  lineKeys?: readonly LineKeyInput[];
  /** Serve the credential-free first-contact variant (no SIP password). */
  bootstrap: boolean;
}

export interface RenderError {
  code: "invalid-input" | "no-such-file" | "not-served" | "unknown-template" | TemplateError["code"];
  message: string;
  field?: string;
  template?: string;
  variable?: string;
}

export type RenderConfigResult = { ok: true; contentType: string; body: string; template: string } | { ok: false; error: RenderError };

const SITE_NAMES = [
  "sipServer", "sipPort", "transport", "transportCode", "ntpServer",
  "timeZone", "tzOffsetHours", "tzOffsetSeconds", "tzOffsetQuarterHours", "tzGmt", "tzPosix",
  "provisioningUrl", "provisioningHostPath", "provisioningScheme",
  "resyncIntervalMin", "resyncIntervalSec", "resyncIntervalHours",
  "firmwareBaseUrl", "firmwareHostPath", "firmwareScheme", "caCertificateUrl", "hasCaCertificate",
  "modelId", "modelLabel", "modelToken", "accounts", "lineKeyCount",
  "firmwareUrl", "firmwareFile", "firmwareVersion", "hasFirmware", "pickupCode", "voicemailCode",
] as const;
const SCHEME_CODE_NAMES = ["provisioningSchemeCode", "firmwareSchemeCode"] as const;
const DEVICE_ID_NAMES = ["mac", "MAC"] as const;
const ACCOUNT_NAMES = ["extension", "displayName", "sipUsername", "provisioningUser", "provisioningPassword", "lineKeys", "hasLineKeys"] as const;
const ITEM_NAMES = ["index", "index0", "label", "extension", "type", "typeCode", "isBlf", "isLine", "isSpeedDial"] as const;

/**
 * The names a template may read for a file kind. Device data exists only in per-MAC files, and
 * the SIP password only in the full (non-bootstrap) per-device config: a bootstrap or common
 * template that mentions it fails to load.
 */
export function allowedTemplateNames(
  profile: Pick<Profile, "format" | "codes">,
  model: Pick<ModelProfile, "hw" | "keyParamBlock" | "codes">,
  kind: FileKind,
  bootstrap: boolean,
): { outer: Set<string>; item: Set<string> } {
  const outer = new Set<string>(SITE_NAMES);
  if (model.hw !== undefined) outer.add("modelHw");
  if (model.codes?.scheme ?? profile.codes.scheme) for (const n of SCHEME_CODE_NAMES) outer.add(n);
  if (kind === "mac-boot" || kind === "mac-config") for (const n of DEVICE_ID_NAMES) outer.add(n);
  if (kind === "mac-config") {
    for (const n of ACCOUNT_NAMES) outer.add(n);
    if (!bootstrap) outer.add("sipPassword");
  }
  const item = new Set<string>(ITEM_NAMES);
  for (let i = 0; i < (model.keyParamBlock?.stride ?? 0); i++) item.add(`p${i}`);
  return { outer, item };
}

const MAC_RE = /^[0-9a-f]{12}$/;

/**
 * Normalise a MAC written with or without ':' / '-' / '.' separators to 12 lowercase hex
 * digits. Rejects all-zero, broadcast and group (multicast) addresses: no phone has one, and
 * "000000000000" is a common-file name (Poly), not a device.
 */
export function normaliseMac(raw: unknown): string | undefined {
  if (typeof raw !== "string" || raw.length > 17) return undefined;
  let hex: string;
  if (/^[0-9A-Fa-f]{12}$/.test(raw)) hex = raw;
  else if (/^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$/.test(raw)) hex = raw.replace(/[:-]/g, "");
  else if (/^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$/.test(raw)) hex = raw.replace(/\./g, "");
  else return undefined;
  hex = hex.toLowerCase();
  if (!MAC_RE.test(hex) || hex === "000000000000") return undefined;
  if (parseInt(hex.slice(0, 2), 16) & 1) return undefined; // IEEE 802 I/G bit: group address
  return hex;
}

const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]{2,45}\])$/;
// SIP user part kept to unreserved characters plus the dialable ones (RFC 3261 §25.1 allows more;
// these values also land in URLs and vendor key/value syntaxes, so stay narrow).
const USER_RE = /^[A-Za-z0-9._~*#+-]{1,64}$/;
// Provisioning credentials are generated per device; a narrow alphabet keeps them safe in
// every context they land in (XML, key = value, Cisco's "[--uid u --pwd p]" rule, URLs).
const PROV_CRED_RE = /^[A-Za-z0-9._~-]{1,128}$/;
// The contract's siteSettings.pickupCode pattern (the voicemailCode setting's too): '*' or '#'
// then 1-7 of digits, '*' and '#'.
// Nothing else reaches a phone's dial string (or a vendor mini-syntax such as Snom's "blf …|code").
const PICKUP_CODE_RE = /^[*#][0-9*#]{1,7}$/;
const URL_RE = /^(https?):\/\/((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?)((?:\/[A-Za-z0-9._~-]+)*)\/?$/;

function checkUrl(field: string, v: unknown): { scheme: "http" | "https"; hostPath: string; url: string } | RenderError {
  const m = typeof v === "string" && v.length <= 512 ? URL_RE.exec(v) : null;
  if (!m) return { code: "invalid-input", field, message: `${field}: must be an http(s) URL with host and plain path, no credentials, query or fragment` };
  const hostPath = `${m[2]}${m[3] ?? ""}`;
  return { scheme: m[1] as "http" | "https", hostPath, url: `${m[1]}://${hostPath}` };
}

function isRenderError(v: unknown): v is RenderError {
  return typeof v === "object" && v !== null && "code" in v && "message" in v;
}

/** Standard (non-DST) UTC offset of an IANA zone in minutes, from two fixed dates (deterministic). */
export function standardOffsetMinutes(timeZone: string): number | undefined {
  if (typeof timeZone !== "string" || !/^[A-Za-z0-9_+\-/]{1,64}$/.test(timeZone)) return undefined;
  const offsetAt = (ms: number): number | undefined => {
    try {
      const parts = new Intl.DateTimeFormat("en-US", { timeZone, timeZoneName: "longOffset" }).formatToParts(new Date(ms));
      const name = parts.find((p) => p.type === "timeZoneName")?.value ?? "";
      if (name === "GMT") return 0;
      const m = /^GMT([+-])(\d{2}):(\d{2})$/.exec(name);
      if (!m) return undefined;
      return (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
    } catch {
      return undefined;
    }
  };
  const jan = offsetAt(Date.UTC(2025, 0, 15));
  const jul = offsetAt(Date.UTC(2025, 6, 15));
  if (jan === undefined || jul === undefined) return undefined;
  return Math.min(jan, jul); // DST adds time in both hemispheres
}

function tzForms(offsetMin: number): Record<string, string> {
  const sign = offsetMin < 0 ? "-" : "+";
  const abs = Math.abs(offsetMin);
  const h = Math.floor(abs / 60);
  const mm = abs % 60;
  const hm = mm ? `${h}:${String(mm).padStart(2, "0")}` : `${h}`;
  return {
    tzOffsetHours: offsetMin === 0 ? "0" : `${sign}${hm}`,
    tzOffsetSeconds: String(offsetMin * 60),
    tzOffsetQuarterHours: String(Math.round(offsetMin / 15)),
    tzGmt: `GMT${sign}${String(h).padStart(2, "0")}:${String(mm).padStart(2, "0")}`,
    // POSIX TZ counts west-positive (IEEE 1003.1 §8.3): UTC+1 is "UTC-1".
    tzPosix: offsetMin === 0 ? "UTC0" : `UTC${offsetMin < 0 ? "+" : "-"}${hm}`,
  };
}

function invalid(field: string, message: string): { ok: false; error: RenderError } {
  return { ok: false, error: { code: "invalid-input", field, message: `${field}: ${message}` } };
}

function text(v: unknown, max: number): v is string {
  return typeof v === "string" && v.length <= max;
}

/**
 * Render one configuration file for a phone. Pure: everything comes from the arguments. Never
 * throws; bad input or a template problem is a typed error (fail closed: no partial file).
 */
export function renderConfig(input: RenderConfigInput): RenderConfigResult {
  try {
    return renderConfigUnsafe(input);
  } catch (e) {
    return { ok: false, error: { code: "invalid-input", message: `render failed: ${(e as Error).message}` } };
  }
}

function renderConfigUnsafe(input: RenderConfigInput): RenderConfigResult {
  const { profile, model, fileKind, site, bootstrap } = input;
  if (!profile || !model || !site) return invalid("input", "profile, model and site are required");
  const file = input.file ?? profile.files.find((f) => f.kind === fileKind && f.template !== undefined);
  if (!file || file.kind !== fileKind || !profile.files.includes(file)) return { ok: false, error: { code: "no-such-file", message: `${profile.vendor} has no ${fileKind} file` } };
  const baseTemplate = bootstrap && file.bootstrapTemplate !== undefined ? file.bootstrapTemplate : file.template;
  if (baseTemplate === undefined) return { ok: false, error: { code: "not-served", message: `${profile.vendor} ${file.pattern} is recognised but not served` } };
  const templateName = model.templates[baseTemplate] ?? baseTemplate; // per-model override
  const template = profile.templates.get(templateName);
  if (!template) return { ok: false, error: { code: "unknown-template", template: templateName, message: `template '${templateName}' is not loaded` } };

  // --- site ---
  if (!text(site.sipServer, 253) || !HOST_RE.test(site.sipServer)) return invalid("site.sipServer", "must be a host name or IP address");
  if (!Number.isInteger(site.sipPort) || site.sipPort < 1 || site.sipPort > 65535) return invalid("site.sipPort", "must be 1-65535");
  if (site.transport !== "udp" && site.transport !== "tcp" && site.transport !== "tls") return invalid("site.transport", "must be udp, tcp or tls");
  if (!text(site.ntpServer, 253) || !HOST_RE.test(site.ntpServer)) return invalid("site.ntpServer", "must be a host name or IP address");
  const offset = standardOffsetMinutes(site.timeZone);
  if (offset === undefined) return invalid("site.timeZone", "must be an IANA time zone name");
  if (!Number.isInteger(site.resyncIntervalMin) || site.resyncIntervalMin < 1 || site.resyncIntervalMin > 43200) return invalid("site.resyncIntervalMin", "must be 1-43200 minutes");
  const prov = checkUrl("site.provisioningUrl", site.provisioningUrl);
  if (isRenderError(prov)) return { ok: false, error: prov };
  const fw = checkUrl("site.firmwareBaseUrl", site.firmwareBaseUrl);
  if (isRenderError(fw)) return { ok: false, error: fw };
  let caUrl = "";
  if (site.caCertificateUrl !== undefined && site.caCertificateUrl !== "") {
    const m = typeof site.caCertificateUrl === "string" && site.caCertificateUrl.length <= 512 ? /^(https?):\/\/[A-Za-z0-9.\-[\]:]+(\/[A-Za-z0-9._~-]+)+$/.exec(site.caCertificateUrl) : null;
    if (!m) return invalid("site.caCertificateUrl", "must be an http(s) URL of a file");
    caUrl = site.caCertificateUrl;
  }

  const pickupCode: unknown = site.pickupCode === undefined ? DEFAULT_PICKUP_CODE : site.pickupCode;
  if (typeof pickupCode !== "string" || !PICKUP_CODE_RE.test(pickupCode)) return invalid("site.pickupCode", "must be * or # then 1-7 of digits, * and #");
  const voicemailCode: unknown = site.voicemailCode === undefined ? DEFAULT_VOICEMAIL_CODE : site.voicemailCode;
  if (typeof voicemailCode !== "string" || !PICKUP_CODE_RE.test(voicemailCode)) return invalid("site.voicemailCode", "must be * or # then 1-7 of digits, * and #");

  const codes = { ...profile.codes, ...model.codes };
  const ctx: Record<string, TemplateValue> = {
    sipServer: site.sipServer,
    sipPort: String(site.sipPort),
    transport: site.transport,
    transportCode: codes.transport[site.transport],
    ntpServer: site.ntpServer,
    timeZone: site.timeZone,
    ...tzForms(offset),
    provisioningUrl: prov.url,
    provisioningHostPath: prov.hostPath,
    provisioningScheme: prov.scheme,
    resyncIntervalMin: String(site.resyncIntervalMin),
    resyncIntervalSec: String(site.resyncIntervalMin * 60),
    resyncIntervalHours: String(Math.ceil(site.resyncIntervalMin / 60)),
    firmwareBaseUrl: fw.url,
    firmwareHostPath: fw.hostPath,
    firmwareScheme: fw.scheme,
    caCertificateUrl: caUrl,
    hasCaCertificate: caUrl !== "",
    modelId: model.id,
    modelLabel: model.label,
    modelToken: model.tokens.model ?? model.id,
    accounts: String(model.accounts),
    lineKeyCount: String(model.lineKeys),
    firmwareUrl: model.firmware ? `${fw.url}/${model.firmware.file}` : "",
    firmwareFile: model.firmware?.file ?? "",
    firmwareVersion: model.firmware?.version ?? "",
    hasFirmware: model.firmware !== undefined,
    pickupCode,
    voicemailCode,
  };
  if (model.hw !== undefined) ctx.modelHw = model.hw;
  if (codes.scheme) {
    ctx.provisioningSchemeCode = codes.scheme[prov.scheme];
    ctx.firmwareSchemeCode = codes.scheme[fw.scheme];
  }

  // --- device (per-MAC files only) ---
  if (fileKind === "mac-boot" || fileKind === "mac-config") {
    const d = input.device;
    if (!d || typeof d !== "object") return invalid("device", `required for ${fileKind} files`);
    const mac = normaliseMac(d.mac);
    if (!mac) return invalid("device.mac", "must be a unicast MAC address");
    ctx.mac = mac;
    ctx.MAC = mac.toUpperCase();
    if (fileKind === "mac-config") {
      if (!text(d.extension, 32) || !USER_RE.test(d.extension)) return invalid("device.extension", "must be 1-32 dialable characters");
      if (!text(d.displayName, 128)) return invalid("device.displayName", "must be text of at most 128 characters");
      if (!text(d.sipUsername, 64) || !USER_RE.test(d.sipUsername)) return invalid("device.sipUsername", "must be 1-64 characters of [A-Za-z0-9._~*#+-]");
      if (!text(d.provisioningUser, 128) || !PROV_CRED_RE.test(d.provisioningUser)) return invalid("device.provisioningUser", "must be 1-128 characters of [A-Za-z0-9._~-]");
      if (!text(d.provisioningPassword, 128) || !PROV_CRED_RE.test(d.provisioningPassword)) return invalid("device.provisioningPassword", "must be 1-128 characters of [A-Za-z0-9._~-]");
      ctx.extension = d.extension;
      ctx.displayName = d.displayName;
      ctx.sipUsername = d.sipUsername;
      ctx.provisioningUser = d.provisioningUser;
      ctx.provisioningPassword = d.provisioningPassword;
      if (!bootstrap) {
        // Never render an empty secret: a phone would register without one and fail silently.
        if (!text(d.sipPassword, 128) || d.sipPassword.length === 0) return invalid("device.sipPassword", "must be 1-128 characters");
        ctx.sipPassword = d.sipPassword;
      }
      const keys = input.lineKeys ?? [];
      if (!Array.isArray(keys) || keys.length > 1024) return invalid("lineKeys", "must be a list");
      const items: TemplateItem[] = [];
      const stride = model.keyParamBlock?.stride ?? 0;
      for (let i = 0; i < Math.min(keys.length, model.lineKeys); i++) {
        const k = keys[i] as LineKeyInput | undefined;
        if (!k || typeof k !== "object") return invalid(`lineKeys[${i}]`, "must be an object");
        if (k.type !== "blf" && k.type !== "line" && k.type !== "speeddial") return invalid(`lineKeys[${i}].type`, "must be blf, line or speeddial");
        if (!text(k.label, 64)) return invalid(`lineKeys[${i}].label`, "must be text of at most 64 characters");
        if (!text(k.extension, 32) || !USER_RE.test(k.extension)) return invalid(`lineKeys[${i}].extension`, "must be 1-32 dialable characters");
        const typeCode = codes.lineKeyType[k.type];
        if (typeCode === undefined) continue; // this vendor offers no such key type; the slot stays as the phone has it
        const item: Record<string, TemplateScalar> = {
          index: String(i + 1),
          index0: String(i),
          label: k.label,
          extension: k.extension,
          type: k.type,
          typeCode,
          isBlf: k.type === "blf",
          isLine: k.type === "line",
          isSpeedDial: k.type === "speeddial",
        };
        for (let j = 0; j < stride; j++) item[`p${j}`] = String(model.keyParamBlock!.base + i * stride + j);
        items.push(item);
      }
      ctx.lineKeys = items;
      ctx.hasLineKeys = items.length > 0;
    }
  }

  const r = renderTemplate(template, ctx, profile.format);
  if (!r.ok) return { ok: false, error: { ...r.error } };
  return { ok: true, contentType: file.contentType ?? profile.contentType, body: r.text, template: templateName };
}
