// Test helper: a UDP socket on loopback that keeps every RTP packet it receives, for unit tests
// of the media plane (what a plane sends to a session's remote address).
import dgram from "node:dgram";
import { parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";

/** Every RTP packet received, in arrival order (payload copied out of the datagram); bind() before use. */
export class RtpSink {
  readonly socket = dgram.createSocket("udp4");
  readonly packets: RtpPacket[] = [];
  constructor() {
    this.socket.on("message", (buf) => {
      const p = parseRtp(buf);
      if (p.ok) this.packets.push({ ...p.value, payload: Uint8Array.from(p.value.payload) });
    });
  }
  bind(): Promise<void> {
    return new Promise<void>((r) => this.socket.bind(0, "127.0.0.1", r));
  }
  get port(): number {
    return this.socket.address().port;
  }
  close(): void {
    this.socket.close();
  }
}
