// The subscriber side of RFC 6665 for end-to-end tests: SUBSCRIBE from a registered Phone's
// socket (callsim.ts; the agent knows the device by that flow), and every NOTIFY that reaches
// it, parsed. The Phone itself answers each NOTIFY 200. Independent of the agent's parser and
// builder; dialog-info bodies are read with a small XML reader that checks well-formedness.
import { randomBytes } from "node:crypto";
import { parseSimMessage, type Phone, type SimMessage } from "./callsim.ts";
import { until } from "./harness.ts";

export interface SeenNotify {
  at: number;
  msg: SimMessage;
  /** Subscription-State value. */
  state: string;
}

export interface DialogElement {
  id: string;
  callId: string | undefined;
  localTag: string | undefined;
  remoteTag: string | undefined;
  direction: string | undefined;
  state: string;
  remoteIdentity: string | undefined;
}

export interface DialogInfo {
  version: number;
  state: string;
  entity: string;
  dialogs: DialogElement[];
}

const token = (): string => randomBytes(6).toString("hex");

/** A subscription as the subscriber holds it (its dialog, RFC 6665 §4.1.2). */
export interface HeldSubscription {
  callId: string;
  fromTag: string;
  toTag: string | undefined;
  uri: string;
  event: string;
  cseq: number;
}

export class Subscriber {
  readonly notifies: SeenNotify[] = [];
  private readonly waiting = new Map<string, (m: SimMessage) => void>();

  constructor(readonly phone: Phone) {
    phone.socket.on("message", (buf) => {
      const m = parseSimMessage(buf.toString("utf8"));
      if (m === undefined) return;
      if (m.method === "NOTIFY") {
        this.notifies.push({ at: Date.now(), msg: m, state: m.header("subscription-state") ?? "" });
        return;
      }
      if (m.status !== undefined && m.status >= 200) {
        const branch = /;branch=([^;,\s]+)/.exec(m.header("via") ?? "")?.[1];
        if (branch !== undefined) this.waiting.get(branch)?.(m);
      }
    });
  }

  /** NOTIFYs of one subscription (by Call-ID), in arrival order. */
  notifiesOf(sub: HeldSubscription): SeenNotify[] {
    return this.notifies.filter((n) => n.msg.header("call-id") === sub.callId);
  }

  async waitNotify(sub: HeldSubscription, pred: (n: SeenNotify) => boolean, timeoutMs = 5000): Promise<SeenNotify> {
    try {
      return await until(() => this.notifiesOf(sub).find(pred), timeoutMs, 10);
    } catch {
      throw new Error(`no matching NOTIFY within ${timeoutMs} ms; got:\n${this.notifiesOf(sub).map((n) => `${n.state}\n${n.msg.body}`).join("\n---\n")}`);
    }
  }

  /** A new SUBSCRIBE to sip:<target>@agent; resolves with the final response and the held dialog. */
  async subscribe(target: string, o: { event?: string | null; expires?: number | string | null; extra?: string[]; body?: string } = {}): Promise<{ res: SimMessage; sub: HeldSubscription }> {
    const sub: HeldSubscription = { callId: `sub-${token()}@sim`, fromTag: token(), toTag: undefined, uri: `sip:${target}@127.0.0.1:${this.phone.agentPort}`, event: o.event ?? "dialog", cseq: 1 };
    const res = await this.send(sub, o);
    if (res.status !== undefined && res.status < 300) sub.toTag = /;\s*tag=([^;>\s]+)/i.exec(res.header("to") ?? "")?.[1];
    return { res, sub };
  }

  /** Refresh (or, with expires 0, end) a subscription inside its dialog (RFC 6665 §4.1.2.2). */
  refresh(sub: HeldSubscription, expires: number): Promise<SimMessage> {
    sub.cseq++;
    return this.send(sub, { event: sub.event, expires });
  }

  /** Raw request from the phone's socket; resolves with its final response. */
  request(text: string, timeoutMs = 5000): Promise<SimMessage> {
    const branch = /;branch=([^;,\s]+)/.exec(text)?.[1] ?? "";
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.delete(branch);
        reject(new Error(`no final response to ${text.split("\r\n")[0]}`));
      }, timeoutMs);
      this.waiting.set(branch, (m) => {
        clearTimeout(t);
        this.waiting.delete(branch);
        resolve(m);
      });
      this.phone.socket.send(Buffer.from(text), this.phone.agentPort, "127.0.0.1");
    });
  }

  private send(sub: HeldSubscription, o: { event?: string | null; expires?: number | string | null; extra?: string[]; body?: string }): Promise<SimMessage> {
    const p = this.phone;
    const body = o.body ?? "";
    const text = [
      `SUBSCRIBE ${sub.uri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${p.port};branch=z9hG4bK${token()};rport`,
      "Max-Forwards: 70",
      `From: <sip:${p.username}@127.0.0.1>;tag=${sub.fromTag}`,
      `To: <${sub.uri}>${sub.toTag !== undefined ? `;tag=${sub.toTag}` : ""}`,
      `Call-ID: ${sub.callId}`,
      `CSeq: ${sub.cseq} SUBSCRIBE`,
      `Contact: <sip:${p.username}@127.0.0.1:${p.port}>`,
      ...(o.event === null ? [] : [`Event: ${o.event ?? "dialog"}`]),
      ...((o.extra ?? []).some((l) => /^accept:/i.test(l)) ? [] : ["Accept: application/dialog-info+xml"]),
      ...(o.expires === null ? [] : [`Expires: ${o.expires ?? 600}`]),
      ...(o.extra ?? []),
      `Content-Length: ${Buffer.byteLength(body)}`,
      "",
      body,
    ].join("\r\n");
    return this.request(text);
  }
}

/**
 * Reads an application/dialog-info+xml body (RFC 4235 §4), checking it is well-formed XML as
 * far as these documents go (one root, tags nested and closed, attributes quoted, entities
 * known). Throws on anything else.
 */
export function parseDialogInfo(xml: string): DialogInfo {
  const text = xml.replace(/^\s*<\?xml[^?]*\?>\s*/, "");
  const tokens = text.match(/<[^>]*>|[^<]+/g) ?? [];
  interface Node { name: string; attrs: Map<string, string>; children: Node[]; text: string }
  const stack: Node[] = [];
  let root: Node | undefined;
  const decode = (s: string): string => {
    if (/&(?!(amp|lt|gt|quot|apos);)/.test(s)) throw new Error(`bad entity in ${JSON.stringify(s)}`);
    return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");
  };
  for (const t of tokens) {
    if (!t.startsWith("<")) {
      if (t.trim() === "") continue;
      if (stack.length === 0) throw new Error("text outside the root element");
      stack[stack.length - 1]!.text += decode(t);
      continue;
    }
    const close = /^<\/([A-Za-z][\w.-]*)\s*>$/.exec(t);
    if (close) {
      const top = stack.pop();
      if (top?.name !== close[1]) throw new Error(`</${close[1]}> closes <${top?.name}>`);
      continue;
    }
    const open = /^<([A-Za-z][\w.-]*)((?:\s+[\w:.-]+\s*=\s*"[^"<]*")*)\s*(\/?)>$/.exec(t);
    if (!open) throw new Error(`malformed tag ${t}`);
    const attrs = new Map<string, string>();
    for (const a of open[2]!.matchAll(/([\w:.-]+)\s*=\s*"([^"]*)"/g)) {
      if (attrs.has(a[1]!)) throw new Error(`duplicate attribute ${a[1]}`);
      attrs.set(a[1]!, decode(a[2]!));
    }
    const node: Node = { name: open[1]!, attrs, children: [], text: "" };
    if (stack.length === 0) {
      if (root !== undefined) throw new Error("two root elements");
      root = node;
    } else stack[stack.length - 1]!.children.push(node);
    if (open[3] !== "/") stack.push(node);
  }
  if (root === undefined || stack.length > 0) throw new Error("unclosed or missing root");
  if (root.name !== "dialog-info" || root.attrs.get("xmlns") !== "urn:ietf:params:xml:ns:dialog-info") throw new Error(`root is ${root.name}`);
  const child = (n: Node, name: string): Node | undefined => n.children.find((c) => c.name === name);
  return {
    version: Number(root.attrs.get("version")),
    state: root.attrs.get("state") ?? "",
    entity: root.attrs.get("entity") ?? "",
    dialogs: root.children
      .filter((c) => c.name === "dialog")
      .map((d) => ({
        id: d.attrs.get("id") ?? "",
        callId: d.attrs.get("call-id"),
        localTag: d.attrs.get("local-tag"),
        remoteTag: d.attrs.get("remote-tag"),
        direction: d.attrs.get("direction"),
        state: child(d, "state")?.text.trim() ?? "",
        remoteIdentity: (() => {
          const r = child(d, "remote");
          return r === undefined ? undefined : child(r, "identity")?.text.trim();
        })(),
      })),
  };
}
