// BLF keys for colleagues: who shares a call group with the phone's owner.
import { test } from "node:test";
import assert from "node:assert/strict";
import { colleagueKeys } from "../../provisioning/linekeys.ts";
import { loadProfiles, findModel } from "../../provisioning/profiles.ts";
import { renderConfig } from "../../provisioning/render.ts";

const site = {
  users: [
    { id: "anna", extension: "1001", name: "Anna" },
    { id: "ben", extension: "1002", name: "Ben" },
    { id: "cara", extension: "1003", name: "Cara" },
    { id: "dan", extension: "1004", name: "Dan" },
  ],
  groups: [
    { members: ["ben", "anna"] },
    { members: ["cara", "dan"] },
    { members: ["anna", "cara", "ben"] },
  ],
};

test("colleagues across the owner's groups, in group then member order, each once, never the owner", () => {
  assert.deepEqual(
    colleagueKeys("anna", site).map((k) => [k.type, k.extension, k.label]),
    [
      ["blf", "1002", "Ben"],
      ["blf", "1003", "Cara"],
    ],
  );
  assert.deepEqual(colleagueKeys("dan", site).map((k) => k.extension), ["1003"]);
});

test("no owner, no site, or an owner in no group: no keys", () => {
  assert.deepEqual(colleagueKeys(undefined, site), []);
  assert.deepEqual(colleagueKeys("anna", null), []);
  assert.deepEqual(colleagueKeys("zoe", site), []);
});

test("a Yealink config carries them as BLF line keys (type 16)", () => {
  const { profiles } = loadProfiles("device-profiles");
  const found = findModel(profiles, "T46U", "yealink");
  assert.ok(found);
  const out = renderConfig({
    profile: found.profile,
    model: found.model,
    fileKind: "mac-config",
    device: { mac: "805ec0100001", extension: "1001", displayName: "Anna", sipUsername: "1001", sipPassword: "s3cret-s3cret", provisioningUser: "p0123456789ab", provisioningPassword: "pppppppppppppppppppppppp" },
    site: { sipServer: "192.0.2.1", sipPort: 5060, transport: "udp", ntpServer: "192.0.2.1", timeZone: "Europe/Berlin", provisioningUrl: "http://192.0.2.1:8080", resyncIntervalMin: 1440, firmwareBaseUrl: "http://192.0.2.1:8080/firmware" },
    lineKeys: colleagueKeys("anna", site),
    bootstrap: false,
  } as Parameters<typeof renderConfig>[0]);
  assert.ok(out.ok, out.ok ? "" : out.error.message);
  assert.match(out.body, /^linekey\.1\.type = 16$/m);
  assert.match(out.body, /^linekey\.1\.value = 1002$/m);
  assert.match(out.body, /^linekey\.2\.value = 1003$/m);
});
