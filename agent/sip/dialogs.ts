// The proxy's dialog table: which two flows a proxied dialog runs over, so that in-dialog
// requests (ACK, BYE, re-INVITE, UPDATE, INFO, PRACK, NOTIFY) reach phones behind NAT over the
// flow they used for the INVITE (RFC 3261 §16.12 loose routing, RFC 5626 spirit) instead of
// the private address in their Contact. Mechanism only: no timers, no I/O.
//
// A dialog is identified by Call-ID + local tag + remote tag (RFC 3261 §12). A proxy sits in
// the middle, so a request from the caller carries (From=caller tag, To=callee tag) and one
// from the callee the reverse; both orderings are indexed and tell the direction.
import type { Flow } from "./types.ts";

export type DialogState = "early" | "confirmed";

/** What the engine may read about a proxied dialog (busy tracking). */
export interface ProxyDialogInfo {
  readonly callId: string;
  /** From tag of the caller's INVITE ("" for an RFC 2543 caller without one). */
  readonly callerTag: string;
  /** To tag the callee put in its 18x / 2xx. */
  readonly calleeTag: string;
  readonly state: DialogState;
  /** performance.now() when the dialog was created (first 18x with a tag, or the 2xx). */
  readonly createdAt: number;
}

export interface Dialog<T> extends ProxyDialogInfo {
  state: DialogState;
  /** Where requests toward the caller go: the flow its INVITE came in on. */
  callerFlow: Flow;
  /** Where requests toward the callee go: the flow its branch INVITE went out on. */
  calleeFlow: Flow;
  /** The owner's payload (the proxy's call and branch). */
  readonly data: T;
}

export interface DialogMatch<T> {
  dialog: Dialog<T>;
  /** The request was sent by the caller (so it goes to the callee). */
  fromCaller: boolean;
}

function key(callId: string, fromTag: string, toTag: string): string {
  return `${callId}\n${fromTag}\n${toTag}`;
}

export class DialogTable<T> {
  /** Dialogs keyed by Call-ID + From tag + To tag as a request from either side carries them. */
  private readonly byKey = new Map<string, DialogMatch<T>>();
  /** Every dialog once (byKey holds each twice). */
  private readonly all = new Set<Dialog<T>>();
  private confirmedCount = 0;

  /** Adds (or returns the existing) dialog for these tags. */
  add(callId: string, callerTag: string, calleeTag: string, callerFlow: Flow, calleeFlow: Flow, state: DialogState, data: T, now: number): Dialog<T> {
    const existing = this.byKey.get(key(callId, callerTag, calleeTag));
    if (existing !== undefined && existing.fromCaller) {
      if (state === "confirmed") this.confirm(existing.dialog);
      return existing.dialog;
    }
    const dialog: Dialog<T> = { callId, callerTag, calleeTag, state, createdAt: now, callerFlow, calleeFlow, data };
    this.byKey.set(key(callId, callerTag, calleeTag), { dialog, fromCaller: true });
    // A caller and callee that picked the same tag collide; the caller's direction wins.
    const reverse = key(callId, calleeTag, callerTag);
    if (!this.byKey.has(reverse)) this.byKey.set(reverse, { dialog, fromCaller: false });
    this.all.add(dialog);
    if (state === "confirmed") this.confirmedCount++;
    return dialog;
  }

  confirm(dialog: Dialog<T>): void {
    if (dialog.state === "confirmed" || !this.all.has(dialog)) return;
    dialog.state = "confirmed";
    this.confirmedCount++;
  }

  /** The dialog a request belongs to, by its Call-ID, From tag and To tag. */
  lookup(callId: string, fromTag: string | undefined, toTag: string | undefined): DialogMatch<T> | undefined {
    return this.byKey.get(key(callId, fromTag ?? "", toTag ?? ""));
  }

  remove(dialog: Dialog<T>): boolean {
    if (!this.all.delete(dialog)) return false;
    if (dialog.state === "confirmed") this.confirmedCount--;
    for (const k of [key(dialog.callId, dialog.callerTag, dialog.calleeTag), key(dialog.callId, dialog.calleeTag, dialog.callerTag)]) {
      if (this.byKey.get(k)?.dialog === dialog) this.byKey.delete(k);
    }
    return true;
  }

  /** Confirmed dialogs (answered calls in progress). */
  confirmed(): number {
    return this.confirmedCount;
  }

  /** Early dialogs (a callee sent 18x with a tag and has not answered). */
  early(): number {
    return this.all.size - this.confirmedCount;
  }
}
