// Entry point of the media worker thread (agent/media/service.ts starts it): a MediaPlane driven
// by the main thread's messages. Nothing here runs on the signalling thread.
import { parentPort, workerData } from "node:worker_threads";
import { MediaPlane } from "./plane.ts";
import type { MediaEvent, WorkerConfig } from "./protocol.ts";

const port = parentPort;
if (port === null) throw new Error("agent/media/worker.ts runs only as a worker thread");
const plane = new MediaPlane({ config: workerData as WorkerConfig, post: (ev: MediaEvent) => port.postMessage(ev) });
port.on("message", (msg: unknown) => {
  if (msg === "shutdown") {
    plane.shutdown();
    // Let the BYEs leave, then end the thread.
    setTimeout(() => port.close(), 50);
    return;
  }
  plane.handle(msg);
});
port.postMessage({ ev: "ready" } satisfies MediaEvent);
