// Installer spreadsheets: a CSV of phones (mac, model, extension, name, owner) read and checked
// row by row before anything is applied. Parsing follows RFC 4180 (quoted fields, doubled quotes,
// CRLF or LF) and tolerates what spreadsheet programs add: a UTF-8 byte-order mark, a ';'
// separator (European Excel), blank lines. Pure: the store-side checks (MAC or extension already
// taken) happen in installer.ts. Hostile input never throws; each problem names its row.

import { resolveModel, type Profile } from "./profiles.ts";
import { normaliseMac } from "./render.ts";

/** A spreadsheet bigger than this is not an installer's phone list. */
export const MAX_CSV_BYTES = 2 * 1024 * 1024;
export const MAX_CSV_ROWS = 10_000;
const MAX_FIELD = 256;

export const PHONE_COLUMNS = ["mac", "model", "extension", "name", "owner"] as const;
type Column = (typeof PHONE_COLUMNS)[number];
const REQUIRED: readonly Column[] = ["mac", "model", "extension"];
/** Header spellings people use for each column. */
const ALIASES: Readonly<Record<string, Column>> = {
  mac: "mac", "mac address": "mac", macaddress: "mac",
  model: "model", "phone model": "model",
  extension: "extension", ext: "extension", number: "extension", username: "extension",
  name: "name", "display name": "name", displayname: "name",
  owner: "owner", user: "owner", "owner id": "owner",
};

/** Extension = SIP username of the phone's account (agent/console/commands.ts USERNAME_RE). */
export const EXTENSION_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;
const OWNER_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export interface PhoneRow {
  /** 1-based line number in the file (the header is line 1). */
  line: number;
  mac: string;
  /** Canonical `<vendor>/<model id>` (provisioning/profiles.ts resolveModel). */
  model: string;
  vendor: string;
  extension: string;
  name?: string;
  owner?: string;
}

export interface RowError {
  line: number;
  /** The column at fault, when one is. */
  column?: string;
  message: string;
}

export interface PhoneCsv {
  rows: PhoneRow[];
  errors: RowError[];
  /** Data lines read (blank lines not counted). */
  total: number;
}

/** Split CSV text into records of fields (RFC 4180 §2). Unterminated quotes are an error. */
export function parseCsv(text: string, separator = ","): { records: Array<{ line: number; fields: string[] }>; error?: RowError } {
  const records: Array<{ line: number; fields: string[] }> = [];
  let fields: string[] = [];
  let field = "";
  let line = 1;
  let recordLine = 1;
  let i = 0;
  let quoted = false;
  let fieldStarted = false;
  const endRecord = (): void => {
    fields.push(field);
    if (!(fields.length === 1 && fields[0]!.trim() === "")) records.push({ line: recordLine, fields });
    fields = [];
    field = "";
    fieldStarted = false;
  };
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      if (c === "\n") line++;
      field += c;
      i++;
      continue;
    }
    if (c === '"' && !fieldStarted) {
      quoted = true;
      fieldStarted = true;
      i++;
      continue;
    }
    if (c === separator) {
      fields.push(field);
      field = "";
      fieldStarted = false;
      i++;
      continue;
    }
    if (c === "\r" && text[i + 1] === "\n") i++;
    if (c === "\n" || c === "\r") {
      endRecord();
      line++;
      recordLine = line;
      i++;
      continue;
    }
    field += c;
    fieldStarted = true;
    i++;
  }
  if (quoted) return { records, error: { line: recordLine, message: "a quoted field is never closed" } };
  if (field !== "" || fields.length) endRecord();
  return { records };
}

/**
 * Read an installer's phone list. Every row is checked on its own (MAC, known model, extension
 * syntax, name and owner) and against the other rows (a MAC or extension listed twice); rows
 * that pass are in `rows`, the others in `errors`, one entry per problem.
 */
export function parsePhoneCsv(input: string | Buffer, profiles: ReadonlyMap<string, Profile>): PhoneCsv {
  const fail = (message: string, line = 1): PhoneCsv => ({ rows: [], errors: [{ line, message }], total: 0 });
  const size = typeof input === "string" ? Buffer.byteLength(input) : input.length;
  if (size > MAX_CSV_BYTES) return fail(`file is larger than ${MAX_CSV_BYTES} bytes`);
  let text: string;
  if (typeof input === "string") text = input;
  else {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(input);
    } catch {
      return fail("file is not UTF-8 text (save the spreadsheet as CSV UTF-8)");
    }
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (/\u0000/.test(text)) return fail("file contains NUL bytes: not a CSV text file");
  const firstLine = text.slice(0, text.search(/\r|\n|$/));
  const separator = firstLine.includes(";") && !firstLine.includes(",") ? ";" : firstLine.includes("\t") && !firstLine.includes(",") ? "\t" : ",";
  const parsed = parseCsv(text, separator);
  if (parsed.error) return { rows: [], errors: [parsed.error], total: parsed.records.length };
  const [header, ...data] = parsed.records;
  if (!header) return fail("file is empty: expected a header line mac,model,extension[,name,owner]");
  if (data.length > MAX_CSV_ROWS) return fail(`file has ${data.length} rows; at most ${MAX_CSV_ROWS} per import`);

  const columns: Array<Column | undefined> = header.fields.map((h) => ALIASES[h.trim().toLowerCase()]);
  const errors: RowError[] = [];
  header.fields.forEach((h, i) => {
    if (columns[i] === undefined) errors.push({ line: header.line, column: h.slice(0, 40), message: `unknown column '${h.slice(0, 40)}' (expected ${PHONE_COLUMNS.join(", ")})` });
  });
  for (const c of new Set(columns.filter((c): c is Column => c !== undefined))) {
    if (columns.filter((x) => x === c).length > 1) errors.push({ line: header.line, column: c, message: `column '${c}' appears twice` });
  }
  for (const c of REQUIRED) if (!columns.includes(c)) errors.push({ line: header.line, column: c, message: `missing column '${c}'` });
  if (errors.length) return { rows: [], errors, total: data.length };

  const rows: PhoneRow[] = [];
  const macLines = new Map<string, number>();
  const extLines = new Map<string, number>();
  for (const rec of data) {
    const rowErrors: RowError[] = [];
    const err = (column: string | undefined, message: string): void => void rowErrors.push({ line: rec.line, ...(column ? { column } : {}), message });
    if (rec.fields.length !== columns.length) {
      err(undefined, `has ${rec.fields.length} fields, the header has ${columns.length}`);
      errors.push(...rowErrors);
      continue;
    }
    const get = (c: Column): string | undefined => {
      const i = columns.indexOf(c);
      if (i < 0) return undefined;
      const v = rec.fields[i]!.trim();
      // csvField's formula defusing undone, so an exported list re-imports unchanged.
      return /^'+[=+\-@]/.test(v) ? v.slice(1) : v;
    };
    for (const f of rec.fields) {
      if (f.length > MAX_FIELD) err(undefined, `a field is longer than ${MAX_FIELD} characters`);
      else if (/[\u0000-\u001f\u007f]/.test(f)) err(undefined, "a field contains a control character or line break");
    }
    if (rowErrors.length) {
      errors.push(...rowErrors);
      continue;
    }
    const macText = get("mac") ?? "";
    const mac = normaliseMac(macText);
    if (!mac) err("mac", macText === "" ? "MAC is empty" : `'${macText}' is not a phone's MAC address (12 hex digits, unicast)`);
    const modelText = get("model") ?? "";
    const found = resolveModel(profiles, modelText);
    if (!found.ok) err("model", found.message);
    const extension = get("extension") ?? "";
    if (!EXTENSION_RE.test(extension)) err("extension", extension === "" ? "extension is empty" : `'${extension}' is not a valid extension (1-32 of letters, digits, . _ -)`);
    const name = get("name");
    const owner = get("owner");
    if (owner !== undefined && owner !== "" && !OWNER_RE.test(owner)) err("owner", `'${owner}' is not a valid owner id`);
    if (name !== undefined && name.length > 64) err("name", "name is longer than 64 characters");
    if (mac) {
      const prev = macLines.get(mac);
      if (prev !== undefined) err("mac", `MAC ${mac} is also on line ${prev}`);
      else macLines.set(mac, rec.line);
    }
    if (EXTENSION_RE.test(extension)) {
      const prev = extLines.get(extension);
      if (prev !== undefined) err("extension", `extension ${extension} is also on line ${prev}`);
      else extLines.set(extension, rec.line);
    }
    if (rowErrors.length || !mac || !found.ok) {
      errors.push(...rowErrors);
      continue;
    }
    const row: PhoneRow = { line: rec.line, mac, model: found.ref, vendor: found.profile.vendor, extension };
    if (name) row.name = name;
    if (owner) row.owner = owner;
    rows.push(row);
  }
  return { rows, errors, total: data.length };
}

/** One CSV field, quoted when it must be (RFC 4180 §2.6), and defused against spreadsheet
 *  formula injection (a leading = + - @ is prefixed with ' when the value is not a number). */
export function csvField(v: string): string {
  let s = v;
  // A value that already starts with quote(s) before such a character gets one more, so import
  // (which takes one leading quote off) reads back exactly what was exported.
  if (/^'*[=+\-@\t\r]/.test(s) && !/^[+-]?[0-9.]+$/.test(s)) s = `'${s}`;
  return /[",\r\n;]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The phone list as CSV, in the column order import reads (a round trip). */
export function phonesToCsv(phones: ReadonlyArray<{ mac: string; model?: string; extension: string; name?: string; owner?: string }>): string {
  const lines = [PHONE_COLUMNS.join(",")];
  for (const p of phones) lines.push([p.mac, p.model ?? "", p.extension, p.name ?? "", p.owner ?? ""].map(csvField).join(","));
  return lines.join("\r\n") + "\r\n";
}
