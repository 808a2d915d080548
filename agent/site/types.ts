// Types of the site configuration (contract $defs/siteConfig) as the agent holds it. The JSON
// Schema in contract/ringedge.schema.json is the authority on shape; these mirror it.
import type { DeviceKind, Group, KnownCaller, User, ValidationCode } from "../routing/model.ts";
import type { InboundRoute, Menu } from "../routing/menu-model.ts";
import type { FeatureCodes } from "../routing/operator-state.ts";

export const SITE_SCHEMA_ID = "ringedge.site/1";
/** Feature code for group call pickup when the site file names none. */
export const DEFAULT_PICKUP_CODE = "*8";

export interface TrunkSettings {
  /** IP literal of the trunk peer (PBX or carrier gateway). */
  host: string;
  port: number;
  transport: "udp" | "tcp";
  /** Source addresses calls from the trunk may come from. */
  allowedSources: string[];
  /** Digits the trunk prepends to internal numbers. */
  prefix?: string;
}

export interface ProvisioningSettings {
  ntpServer?: string;
  timeZone?: string;
  /** Minutes between configuration re-fetches by phones; 0 = never. */
  resyncIntervalMin?: number;
}

export interface SiteSettings {
  /** Group call pickup feature code, "*8" by default. */
  pickupCode: string;
  /** Operator-state feature codes (away, back, dndOn, dndOff, login, logout); absent ones default (routing/operator-state.ts). */
  featureCodes?: Partial<FeatureCodes>;
  trunk?: TrunkSettings;
  provisioning?: ProvisioningSettings;
  /** IANA zone of the groups' working hours (required when a group has hours). */
  timeZone?: string;
  /** How caller numbers match the known-callers directory. */
  knownCallers?: KnownCallerSettings;
}

export interface KnownCallerSettings {
  /** Country calling code: a national number (leading 0) from the trunk is read as +<code><rest>. */
  countryCode?: string;
  /** Remember who last answered a caller for this long (seconds; 0/absent = off). */
  rememberAnsweredS?: number;
}

/** A device as the site file lists it. */
export interface SiteDeviceConfig {
  id: string;
  /** User id. */
  owner: string;
  kind: DeviceKind;
  username?: string;
  password?: string;
  displayName?: string;
  mac?: string;
  model?: string;
}

/** The site file / console push: a full snapshot (contract $defs/siteConfig). */
export interface SiteConfig {
  schema: typeof SITE_SCHEMA_ID;
  version: number;
  settings: Partial<SiteSettings>;
  users: User[];
  devices: SiteDeviceConfig[];
  groups: Group[];
  /** The console's directory of known callers. */
  knownCallers?: KnownCaller[];
  /** Greetings for trunk calls and their menus (docs/menus.md). */
  inbound?: InboundRoute[];
  menus?: Menu[];
}

/** The applied site as the store keeps it (devices live in the store's device table). */
export interface SiteRecord {
  version: number;
  /** sha256 (hex) of the canonical JSON of the applied snapshot. */
  hash: string;
  appliedAt: string;
  source: "file" | "console";
  settings: SiteSettings;
  users: User[];
  groups: Group[];
  /** The console's directory of known callers (absent = none). */
  knownCallers?: KnownCaller[];
  /** Greetings for trunk calls and their menus (absent = none). */
  inbound?: InboundRoute[];
  menus?: Menu[];
}

export type SiteErrorCode =
  | ValidationCode
  /** The JSON Schema of the contract refused the value. */
  | "schema"
  /** Two devices (in the file, or a file device and a local one) share a SIP username. */
  | "duplicate-username"
  /** Two devices share a MAC address. */
  | "duplicate-mac"
  /** A file device has the id of a device added locally (the file never touches those). */
  | "local-device-id"
  /** A device's model names no vendor or model of the device profiles. */
  | "unknown-model"
  /** A device's bare model name is known to more than one vendor: write `<vendor>/<model>`. */
  | "ambiguous-model"
  /** The file could not be read or is not JSON. */
  | "unreadable"
  /** Valid, but the store could not make it durable; nothing was applied. */
  | "persist-failed"
  /** A feature code equals or starts another one (or the pickup code), or a number. */
  | "feature-code-clash"
  /** A greeting's or menu's prompt file cannot be read or is not a WAV the appliance plays. */
  | "unplayable-prompt";

/** One problem with a site snapshot, named by its JSON path (e.g. "groups[2].members[0]"). */
export interface SiteError {
  code: SiteErrorCode;
  path: string;
  message: string;
}
