// A small, strict XML 1.0 well-formedness checker that also builds a minimal element tree, so
// rendered phone configs can be checked for both form and content. Deliberately narrower than
// XML: no DOCTYPE (no entity definitions, so no entity expansion attacks), only the five
// predefined entities and character references. Never throws.

export interface XmlElement {
  name: string;
  attrs: Map<string, string>;
  children: Array<XmlElement | string>;
}

export type XmlCheckResult = { ok: true; root: XmlElement } | { ok: false; error: string; offset: number };

const NAME_START = "A-Za-z_:\\u00C0-\\u00D6\\u00D8-\\u00F6\\u00F8-\\u02FF\\u0370-\\u037D\\u037F-\\u1FFF\\u200C-\\u200D\\u2070-\\u218F\\u2C00-\\u2FEF\\u3001-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFFD";
const NAME_RE = new RegExp(`[${NAME_START}][${NAME_START}\\-.0-9\\u00B7\\u0300-\\u036F\\u203F-\\u2040]*`, "y");
const FORBIDDEN_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const PREDEFINED: Readonly<Record<string, string>> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function validCodePoint(cp: number): boolean {
  return cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
}

/** Check `text` is one well-formed XML document; return its root element. */
export function checkXml(text: string): XmlCheckResult {
  if (typeof text !== "string") return { ok: false, error: "not text", offset: 0 };
  const bad = FORBIDDEN_CHAR.exec(text);
  if (bad) return { ok: false, error: "character not allowed in XML", offset: bad.index };
  let i = 0;
  const fail = (error: string, at = i): XmlCheckResult => ({ ok: false, error, offset: at });
  const skipWs = (): void => {
    while (i < text.length && /[ \t\r\n]/.test(text[i]!)) i++;
  };
  const readName = (): string | undefined => {
    NAME_RE.lastIndex = i;
    const m = NAME_RE.exec(text);
    if (!m) return undefined;
    i += m[0].length;
    return m[0];
  };
  // Decode entity and character references in text or attribute values.
  const decode = (raw: string, at: number): string | { error: string; offset: number } => {
    let out = "";
    let k = 0;
    while (k < raw.length) {
      const amp = raw.indexOf("&", k);
      if (amp < 0) {
        out += raw.slice(k);
        break;
      }
      out += raw.slice(k, amp);
      const semi = raw.indexOf(";", amp);
      if (semi < 0) return { error: "'&' not starting a reference", offset: at + amp };
      const ref = raw.slice(amp + 1, semi);
      let ch: string | undefined;
      const num = /^#(?:x([0-9A-Fa-f]{1,6})|([0-9]{1,7}))$/.exec(ref);
      if (num) {
        const cp = num[1] !== undefined ? parseInt(num[1], 16) : parseInt(num[2]!, 10);
        if (!validCodePoint(cp)) return { error: `character reference to a forbidden character`, offset: at + amp };
        ch = String.fromCodePoint(cp);
      } else ch = PREDEFINED[ref];
      if (ch === undefined) return { error: `unknown entity '&${ref};'`, offset: at + amp };
      out += ch;
      k = semi + 1;
    }
    return out;
  };
  const skipMisc = (): XmlCheckResult | undefined => {
    for (;;) {
      skipWs();
      if (text.startsWith("<!--", i)) {
        const end = text.indexOf("-->", i + 4);
        if (end < 0) return fail("unterminated comment");
        if (text.slice(i + 4, end).includes("--")) return fail("'--' inside a comment");
        i = end + 3;
      } else if (text.startsWith("<?", i) && !text.startsWith("<?xml ", i)) {
        const end = text.indexOf("?>", i);
        if (end < 0) return fail("unterminated processing instruction");
        i = end + 2;
      } else return undefined;
    }
  };

  if (text.charCodeAt(0) === 0xfeff) i = 1;
  if (text.startsWith("<?xml", i)) {
    const end = text.indexOf("?>", i);
    if (end < 0) return fail("unterminated XML declaration");
    if (!/^<\?xml\s+version\s*=\s*(["'])1\.[0-9]\1(\s+encoding\s*=\s*(["'])[A-Za-z][A-Za-z0-9._-]*\3)?(\s+standalone\s*=\s*(["'])(yes|no)\5)?\s*$/.test(text.slice(i, end))) return fail("malformed XML declaration");
    i = end + 2;
  }
  const m1 = skipMisc();
  if (m1) return m1;
  if (text.startsWith("<!DOCTYPE", i)) return fail("DOCTYPE is not accepted");
  if (text[i] !== "<") return fail("document has no root element");

  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  while (i < text.length) {
    if (stack.length === 0 && root) break;
    if (text[i] !== "<") {
      const next = text.indexOf("<", i);
      const end = next < 0 ? text.length : next;
      const raw = text.slice(i, end);
      if (raw.includes("]]>")) return fail("']]>' in text", i + raw.indexOf("]]>"));
      const dec = decode(raw, i);
      if (typeof dec !== "string") return fail(dec.error, dec.offset);
      if (stack.length === 0) return fail("text outside the root element");
      stack[stack.length - 1]!.children.push(dec);
      i = end;
      continue;
    }
    if (text.startsWith("<!--", i)) {
      const end = text.indexOf("-->", i + 4);
      if (end < 0) return fail("unterminated comment");
      if (text.slice(i + 4, end).includes("--")) return fail("'--' inside a comment");
      i = end + 3;
      continue;
    }
    if (text.startsWith("<![CDATA[", i)) {
      const end = text.indexOf("]]>", i);
      if (end < 0) return fail("unterminated CDATA section");
      if (stack.length === 0) return fail("CDATA outside the root element");
      stack[stack.length - 1]!.children.push(text.slice(i + 9, end));
      i = end + 3;
      continue;
    }
    if (text.startsWith("<?", i)) {
      const end = text.indexOf("?>", i);
      if (end < 0) return fail("unterminated processing instruction");
      i = end + 2;
      continue;
    }
    if (text.startsWith("</", i)) {
      const at = i;
      i += 2;
      const name = readName();
      if (!name) return fail("malformed end tag", at);
      skipWs();
      if (text[i] !== ">") return fail("malformed end tag", at);
      i++;
      const open = stack.pop();
      if (!open) return fail(`end tag </${name}> without a start tag`, at);
      if (open.name !== name) return fail(`end tag </${name}> does not match <${open.name}>`, at);
      continue;
    }
    if (text.startsWith("<!", i)) return fail("declaration not accepted here");
    // Start tag.
    const at = i;
    i++;
    const name = readName();
    if (!name) return fail("malformed start tag", at);
    const el: XmlElement = { name, attrs: new Map(), children: [] };
    for (;;) {
      const before = i;
      skipWs();
      if (text.startsWith("/>", i)) {
        i += 2;
        break;
      }
      if (text[i] === ">") {
        i++;
        stack.push(el);
        break;
      }
      if (i === before) return fail(`attributes of <${name}> must be separated by white space`);
      const attrAt = i;
      const an = readName();
      if (!an) return fail(`malformed attribute in <${name}>`);
      skipWs();
      if (text[i] !== "=") return fail(`attribute '${an}' has no value`);
      i++;
      skipWs();
      const q = text[i];
      if (q !== '"' && q !== "'") return fail(`attribute '${an}' value is not quoted`);
      const end = text.indexOf(q, i + 1);
      if (end < 0) return fail(`unterminated attribute '${an}'`);
      const raw = text.slice(i + 1, end);
      if (raw.includes("<")) return fail(`'<' in attribute '${an}'`, i + 1 + raw.indexOf("<"));
      // Attribute-value normalisation (XML §3.3.3): literal white space becomes a space;
      // character references survive as the characters they name.
      const dec = decode(raw.replace(/\r\n?/g, "\n").replace(/[\t\n]/g, " "), i + 1);
      if (typeof dec !== "string") return fail(dec.error, dec.offset);
      if (el.attrs.has(an)) return fail(`duplicate attribute '${an}' in <${name}>`, attrAt);
      el.attrs.set(an, dec);
      i = end + 1;
    }
    if (stack.length === 0 || stack[stack.length - 1] !== el) {
      // Empty-element tag.
      if (stack.length === 0) {
        if (root) return fail("more than one root element", at);
        root = el;
      } else stack[stack.length - 1]!.children.push(el);
    } else {
      if (stack.length === 1) {
        if (root) return fail("more than one root element", at);
        root = el;
      } else stack[stack.length - 2]!.children.push(el);
    }
  }
  if (stack.length) return fail(`<${stack[stack.length - 1]!.name}> is never closed`);
  if (!root) return fail("document has no root element");
  const m2 = skipMisc();
  if (m2) return m2;
  if (i < text.length) return fail("content after the root element");
  return { ok: true, root };
}

/** Concatenated text content of an element (not of its descendants). */
export function ownText(el: XmlElement): string {
  return el.children.filter((c): c is string => typeof c === "string").join("");
}

/** Depth-first search for elements named `name` (optionally with attribute attr=value). */
export function findAll(el: XmlElement, name: string, attr?: [string, string]): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement): void => {
    if (e.name === name && (!attr || e.attrs.get(attr[0]) === attr[1])) out.push(e);
    for (const c of e.children) if (typeof c !== "string") walk(c);
  };
  walk(el);
  return out;
}
