// A phone's HTTP fetch from the provisioning server on 127.0.0.1, as the e2e tests make it:
// no keep-alive, a bounded wait, the body as bytes-as-text (latin1), and the WWW-Authenticate
// lines as sent (one per algorithm; node joins them in `headers`).
import http from "node:http";

export interface PhoneResponse {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  challenges: string[];
}

export function phoneGet(port: number, p: string, headers: Record<string, string> = {}): Promise<PhoneResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: p, headers, agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("latin1");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => {
        const challenges = res.rawHeaders.filter((_, i) => i % 2 === 1 && res.rawHeaders[i - 1]!.toLowerCase() === "www-authenticate");
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers, challenges });
      });
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}
