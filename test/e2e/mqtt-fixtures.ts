// Site snapshots for the MQTT tests and bench: valid by construction, sized on demand
// (the bench uses 500 users / 600 phones / 100 groups, about 150 KB of JSON).
export interface SnapshotSize {
  users: number;
  devices: number;
  groups: number;
  /** Members per group, taken round-robin from the users. */
  membersPerGroup?: number;
}

export function siteSnapshot(version: number, size: SnapshotSize = { users: 3, devices: 3, groups: 1 }): Record<string, unknown> {
  const users = Array.from({ length: size.users }, (_, i) => ({
    id: `u-${i}`,
    extension: String(100000 + i),
    name: `Operator ${i}`,
    mobile: `+4917000${String(i).padStart(5, "0")}`,
    availability: "available",
    callLimit: 2,
  }));
  const devices = Array.from({ length: size.devices }, (_, i) => ({
    id: `dev-${i}`,
    owner: `u-${i % Math.max(1, size.users)}`,
    kind: i % 5 === 4 ? "soft" : "physical",
    username: `ph${i}`,
    password: `secret-pass-${i}`,
    displayName: `Phone ${i}`,
  }));
  const per = size.membersPerGroup ?? Math.min(10, size.users);
  const groups = Array.from({ length: size.groups }, (_, g) => ({
    id: `g-${g}`,
    number: String(1000 + g),
    name: `Group ${g}`,
    strategy: (["sequential", "simultaneous", "evenly", "cumulative"] as const)[g % 4],
    members: Array.from({ length: per }, (_, k) => `u-${(g * per + k) % size.users}`).filter((v, i, a) => a.indexOf(v) === i),
    ringCount: 3,
    checkAvailability: g % 2 === 0,
    noAnswer: { kind: "hangup" },
    pickup: { enabled: true },
  }));
  return { schema: "ringedge.site/1", version, settings: {}, users, devices, groups };
}

/** The desired envelope around a snapshot (hash left out: optional). */
export function desiredEnvelope(siteId: string, config: Record<string, unknown>): Record<string, unknown> {
  return { schema: "ringedge.desired/1", siteId, version: config.version, config };
}
