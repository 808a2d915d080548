// Free even-based UDP port ranges for media tests (the media plane binds RTP on even ports).
import dgram from "node:dgram";

/** Whether a UDP port can be bound on loopback now. */
function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(false));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/**
 * Six ports from an even one, all free now. (bind(0) hands out odd ports on Linux, so a free
 * port from the OS does not do.)
 */
export async function freeMediaRange(): Promise<{ min: number; max: number }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const min = 40000 + 2 * Math.floor(Math.random() * 10000);
    let ok = true;
    for (let p = min; p < min + 6 && ok; p++) ok = await udpFree(p);
    if (ok) return { min, max: min + 5 };
  }
  throw new Error("no free media port range");
}
