// The SIP transaction layer, RFC 3261 §17 with RFC 6026's corrections for 2xx to INVITE.
// Public entry point; the state machines live in ./transaction/.
export { TransactionLayer } from "./transaction/layer.ts";
export type {
  ReceiveRequestResult,
  ReceiveResponseResult,
  SendRequestError,
  SendRequestResult,
  TransactionCounts,
  TransactionLayerOptions,
} from "./transaction/layer.ts";
export { TransactionState } from "./transaction/common.ts";
export {
  InviteServerTransaction,
  NonInviteServerTransaction,
  type RespondError,
  type RespondResult,
  type ServerTransaction,
  type ServerTransactionListener,
} from "./transaction/server.ts";
export {
  InviteClientTransaction,
  NonInviteClientTransaction,
  type ClientTransaction,
  type ClientTransactionCallbacks,
  type SendRequestOptions,
  type TimeoutTimer,
} from "./transaction/client.ts";
export { DEFAULT_TIMER_SETTINGS, resolveTimers, type TimerSettings, type TimerValues } from "./transaction/timers.ts";
export { MAGIC_COOKIE, createBranch, isRfc3261Branch } from "./transaction/keys.ts";
export { buildAck, buildCancel } from "./transaction/build.ts";
