// Re-sync: tell registered phones to fetch their configuration again, with an unsolicited
// NOTIFY (Event: check-sync; Cisco: resync; reboot variants per vendor profile), sent to each
// registered binding over the flow the phone registered from (NAT-safe, like the OPTIONS
// keep-alive). A phone that challenges the NOTIFY (Cisco Auth_Resync-Reboot, provisioning.md
// §4.7) gets it again with its own SIP credentials. Results are per phone: ok or why not.

import { computeAuthorization } from "../agent/sip/digest.ts";
import { getHeader } from "../agent/sip/message.ts";
import { buildRequest } from "../agent/sip/requests.ts";
import type { TransactionLayer } from "../agent/sip/transaction.ts";
import type { Flow, SipRequest } from "../agent/sip/types.ts";
import { findModel, type Profile } from "./profiles.ts";

export interface ResyncPhone {
  deviceId: string;
  username: string;
  password: string;
  mac?: string;
  model?: string;
}

export interface ResyncBinding {
  contact: string;
  flow: Flow;
}

export type NotifyOutcome = { status: number; challenge?: string } | { error: "timeout" | "transport" | "build" };

export interface ResyncDeps {
  profiles: ReadonlyMap<string, Profile>;
  bindings(username: string): readonly ResyncBinding[];
  /** Send one NOTIFY with these extra headers to the binding; resolves with the final outcome. */
  send(binding: ResyncBinding, headers: Array<[string, string]>, aor: string): Promise<NotifyOutcome>;
  /** NOTIFYs in flight at once (a site of 500 phones must not all fetch in the same second). */
  concurrency?: number;
}

export interface ResyncResult {
  deviceId: string;
  username: string;
  mac?: string;
  ok: boolean;
  /** The Event value sent. */
  event?: string;
  status?: number;
  error?: string;
  /** Asked for a reboot, but the vendor has no reboot event: a plain re-sync was sent. */
  rebootUnsupported?: boolean;
}

/** The Event header value for a phone: its vendor's, or plain check-sync for unknown models. */
export function resyncEventFor(profiles: ReadonlyMap<string, Profile>, model: string | undefined, reboot: boolean): { event: string; rebootUnsupported: boolean } {
  const found = model !== undefined ? findModel(profiles, model) : undefined;
  const r = found?.profile.resync ?? { event: "check-sync", rebootEvent: "check-sync;reboot=true" };
  if (!reboot) return { event: r.event, rebootUnsupported: false };
  return r.rebootEvent !== undefined ? { event: r.rebootEvent, rebootUnsupported: false } : { event: r.event, rebootUnsupported: true };
}

async function resyncOne(phone: ResyncPhone, reboot: boolean, deps: ResyncDeps): Promise<ResyncResult> {
  const { event, rebootUnsupported } = resyncEventFor(deps.profiles, phone.model, reboot);
  const base: ResyncResult = { deviceId: phone.deviceId, username: phone.username, ok: false, event, ...(phone.mac ? { mac: phone.mac } : {}), ...(rebootUnsupported ? { rebootUnsupported } : {}) };
  const bindings = deps.bindings(phone.username);
  if (bindings.length === 0) return { ...base, error: "not registered" };
  // Every registered contact of the phone gets it; one 2xx is success.
  const outcomes = await Promise.all(
    bindings.map(async (b) => {
      const headers: Array<[string, string]> = [["Event", event], ["Subscription-State", "terminated"]];
      let out = await deps.send(b, headers, phone.username);
      if ("status" in out && (out.status === 401 || out.status === 407) && out.challenge) {
        const auth = computeAuthorization(out.challenge, { method: "NOTIFY", uri: b.contact, username: phone.username, password: phone.password });
        if (typeof auth === "string") out = await deps.send(b, [...headers, [out.status === 401 ? "Authorization" : "Proxy-Authorization", auth]], phone.username);
      }
      return out;
    }),
  );
  const okOne = outcomes.find((o) => "status" in o && o.status >= 200 && o.status < 300);
  if (okOne && "status" in okOne) return { ...base, ok: true, status: okOne.status };
  const first = outcomes[0]!;
  return "status" in first ? { ...base, status: first.status, error: `phone answered ${first.status}` } : { ...base, error: first.error === "timeout" ? "no answer" : first.error === "transport" ? "could not send" : "bad contact" };
}

/** Re-sync the phones, at most `concurrency` at a time; onProgress after each phone. */
export async function resyncPhones(phones: readonly ResyncPhone[], opts: { reboot: boolean }, deps: ResyncDeps, onProgress?: (done: number, total: number, last: ResyncResult) => void): Promise<ResyncResult[]> {
  const results: ResyncResult[] = new Array(phones.length);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < phones.length) {
      const i = next++;
      let r: ResyncResult;
      try {
        r = await resyncOne(phones[i]!, opts.reboot, deps);
      } catch (e) {
        r = { deviceId: phones[i]!.deviceId, username: phones[i]!.username, ok: false, error: (e as Error).message };
      }
      results[i] = r;
      done++;
      onProgress?.(done, phones.length, r);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(deps.concurrency ?? 20, phones.length)) }, worker));
  return results;
}

/** The agent's sender: a NOTIFY client transaction on the binding's flow (RFC 3261 §17.1.2). */
export function transactionSender(transactions: TransactionLayer): ResyncDeps["send"] {
  return (b, headers, aor) =>
    new Promise((resolve) => {
      let req: SipRequest;
      try {
        req = buildRequest({ method: "NOTIFY", requestUri: b.contact, flow: b.flow, branch: transactions.createBranch(), to: `sip:${aor}@${b.flow.remoteAddress}`, headers });
      } catch {
        resolve({ error: "build" });
        return;
      }
      let settled = false;
      const done = (o: NotifyOutcome): void => {
        if (!settled) resolve(o);
        settled = true;
      };
      const sent = transactions.sendRequest(req, b.flow, {
        onProvisional: () => undefined,
        onFinal: (res) => {
          const challenge = getHeader(res, res.status === 407 ? "proxy-authenticate" : "www-authenticate");
          done({ status: res.status, ...(challenge !== undefined ? { challenge } : {}) });
        },
        onTimeout: () => done({ error: "timeout" }),
        onTransportError: () => done({ error: "transport" }),
      });
      if (!sent.ok) done({ error: "transport" });
    });
}

/**
 * The console's cmd/resync over MQTT: `{ devices?: string[] (device id, username or MAC; all
 * phones when absent), reboot?: boolean }`. Arguments are checked before anything is sent;
 * an unknown device is an error naming it, and nothing is sent then.
 */
export function consoleResyncHandler(
  resync: (deviceIds: readonly string[], reboot: boolean) => Promise<ResyncResult[]>,
  devices: () => ReadonlyArray<{ id: string; username: string; mac?: string }>,
): (args: Record<string, unknown>) => Promise<{ results: ResyncResult[] }> {
  return async (args) => {
    const reboot = args.reboot ?? false;
    if (typeof reboot !== "boolean") throw new Error("args.reboot must be true or false");
    const wanted = args.devices;
    const all = devices();
    let ids: string[];
    if (wanted === undefined) {
      ids = all.filter((d) => d.mac !== undefined).map((d) => d.id);
    } else {
      if (!Array.isArray(wanted) || wanted.length > 10_000 || !wanted.every((w) => typeof w === "string" && w.length > 0 && w.length <= 64)) {
        throw new Error("args.devices must be a list of device ids, usernames or MACs");
      }
      ids = [];
      for (const ref of wanted as string[]) {
        const mac = ref.toLowerCase().replace(/[:.-]/g, "");
        const d = all.find((x) => x.id === ref || x.username === ref || (x.mac !== undefined && x.mac === mac));
        if (!d) throw new Error(`no device '${ref}'`);
        ids.push(d.id);
      }
    }
    return { results: await resync(ids, reboot) };
  };
}
