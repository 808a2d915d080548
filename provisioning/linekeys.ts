// Line keys a phone gets: BLF keys for the colleagues its owner shares call groups with, so
// an operator sees at a glance who is on the phone and can pick up for them. Pure.
import type { LineKeyInput } from "./render.ts";

interface SiteView {
  users: ReadonlyArray<{ id: string; extension: string; name: string }>;
  groups: ReadonlyArray<{ members: readonly string[] }>;
}

/**
 * Colleagues in the order they first appear across the owner's groups (group order, then
 * member order), the owner left out, each once. Keys beyond the model's count are dropped by
 * the renderer.
 */
export function colleagueKeys(ownerId: string | undefined, site: SiteView | null | undefined): LineKeyInput[] {
  if (!ownerId || !site) return [];
  const byId = new Map(site.users.map((u) => [u.id, u]));
  const seen = new Set<string>([ownerId]);
  const keys: LineKeyInput[] = [];
  for (const g of site.groups) {
    if (!g.members.includes(ownerId)) continue;
    for (const m of g.members) {
      if (seen.has(m)) continue;
      seen.add(m);
      const u = byId.get(m);
      if (u) keys.push({ type: "blf", label: u.name.slice(0, 64), extension: u.extension });
    }
  }
  return keys;
}
