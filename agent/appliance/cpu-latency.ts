// CPU wake-up latency request through Linux PM QoS (Documentation/power/pm_qos_interface.rst):
// while a process holds /dev/cpu_dma_latency open with a value written to it, the cpuidle
// governor keeps every CPU out of idle states whose exit latency exceeds that value. With 0
// the idle loop polls instead of halting. Why the agent wants it: a call that arrives after a
// quiet spell otherwise runs its INVITE → first-fork path on a CPU that has just left a deep
// idle state (or, in a VM with guest halt-polling off, a vCPU the host descheduled), with cold
// caches and branch predictors; bench/README.md has the measurements. The kernel drops the
// request when the descriptor closes, so a crash never leaves it behind. Mechanism only: the
// agent decides whether and what to request (setting cpuWakeLatencyUs).
import fs from "node:fs";

export const PM_QOS_DEVICE = "/dev/cpu_dma_latency";

export type CpuLatencyStatus =
  | { requestedUs: number; held: true; device: string }
  | { requestedUs: number; held: false; device: string; reason: string };

export class CpuLatencyRequest {
  private fd: number | undefined;

  private constructor(
    private readonly outcome: CpuLatencyStatus,
    fd: number | undefined,
  ) {
    this.fd = fd;
  }

  /** What was asked for and whether it is in force now. */
  get status(): CpuLatencyStatus {
    if (this.outcome.held && this.fd === undefined) return { requestedUs: this.outcome.requestedUs, held: false, device: this.outcome.device, reason: "released" };
    return this.outcome;
  }

  /**
   * Opens the PM QoS device and writes the request (a binary signed 32-bit value, host byte
   * order, as the kernel reads 4-byte writes). Never throws: a device that is missing or not
   * writable (not root, no udev rule) gives a status that says why, and nothing is held.
   */
  static hold(requestedUs: number, device: string = PM_QOS_DEVICE): CpuLatencyRequest {
    if (!Number.isInteger(requestedUs) || requestedUs < 0 || requestedUs > 2_000_000_000) {
      return new CpuLatencyRequest({ requestedUs, held: false, device, reason: "the request must be a whole number of µs, 0 or more" }, undefined);
    }
    let fd: number | undefined;
    try {
      // Write-only without O_CREAT: a missing device must not turn into a new regular file.
      fd = fs.openSync(device, fs.constants.O_WRONLY);
      const value = Buffer.alloc(4);
      value.writeInt32LE(requestedUs);
      if (fs.writeSync(fd, value) !== 4) throw new Error("short write");
      return new CpuLatencyRequest({ requestedUs, held: true, device }, fd);
    } catch (err) {
      if (fd !== undefined) closeQuietly(fd);
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === "ENOENT"
          ? `${device} does not exist (kernel without PM QoS, or not Linux)`
          : e.code === "EACCES" || e.code === "EPERM"
            ? `no write access to ${device}: run as root or install firmware-hooks/60-ringedge-cpu-latency.rules`
            : `${device}: ${e.message}`;
      return new CpuLatencyRequest({ requestedUs, held: false, device, reason: why }, undefined);
    }
  }

  /** Whether the request is in force now. */
  get held(): boolean {
    return this.fd !== undefined;
  }

  /** Withdraws the request (closing the descriptor is how PM QoS learns it). Idempotent. */
  release(): void {
    if (this.fd === undefined) return;
    closeQuietly(this.fd);
    this.fd = undefined;
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed: nothing is held either way.
  }
}
