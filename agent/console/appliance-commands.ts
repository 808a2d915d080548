// Control-socket commands for the appliance firmware (firmware-hooks/): drain before an
// upgrade, call a drain off, watchdog health. Only a running agent has them; the CLI answers
// for an agent that is not running (agent/appliance/cli.ts).
import { CommandError, type CommandTable } from "./control.ts";
import type { DrainReport } from "../appliance/drain.ts";
import type { HealthReport } from "../appliance/health.ts";

/** Longest drain one command may ask for (an hour; the setting has the same bound). */
const MAX_DRAIN_S = 3600;

export interface ApplianceView {
  drain(timeoutMs?: number): Promise<DrainReport>;
  drainer: { resume(): boolean; readonly draining: boolean };
  health(): Promise<HealthReport>;
}

export function applianceCommands(view: ApplianceView): CommandTable {
  return {
    drain: (args) => {
      const t = args.timeoutS;
      if (t !== undefined && !(typeof t === "number" && Number.isFinite(t) && t >= 0 && t <= MAX_DRAIN_S)) throw new CommandError(`timeoutS must be a number of seconds 0-${MAX_DRAIN_S}`);
      return view.drain(t === undefined ? undefined : Math.round(t * 1000));
    },
    resume: () => ({ resumed: view.drainer.resume(), draining: view.drainer.draining }),
    health: () => view.health(),
  };
}
