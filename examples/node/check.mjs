// Checking rate limits against flux-node from Node.js.
//
// flux-node answers NATS requests on flux.v1.check (one key) and
// flux.v1.check_batch (many keys in one request); docs/PROTOCOL.md has the
// full protocol. Run a node, then this file:
//
//   go run ./cmd/flux-node --nats-listen 127.0.0.1:14222     # one terminal
//   FLUX_NATS_URL=nats://127.0.0.1:14222 node check.mjs default alice
//
// Arguments: LIMITER (default "default") and KEY (default "alice").
// FLUX_NATS_URL defaults to nats://127.0.0.1:4222.

import { connect } from "@nats-io/transport-node";
import { pathToFileURL } from "node:url";

/** An error reply from flux-node (400 bad request, 404 unknown limiter,
 * 413 too large, 503 overloaded or shutting down). A denial is not an
 * error: it is a decision with allowed === false. */
export class FluxError extends Error {
  constructor(code, description) {
    super(`flux-node: ${code} ${description}`);
    this.name = "FluxError";
    this.code = code;
    this.description = description;
  }
}

const encoder = new TextEncoder();

// request sends one JSON request and returns the decoded reply, or throws
// a FluxError if the node answered with the micro error headers.
async function request(nc, subject, body, timeout) {
  const msg = await nc.request(subject, encoder.encode(JSON.stringify(body)), { timeout });
  const code = msg.headers?.get("Nats-Service-Error-Code");
  if (code) {
    throw new FluxError(Number(code), msg.headers.get("Nats-Service-Error"));
  }
  return msg.json();
}

/** check asks whether one request of `cost` (default 1; 0 peeks) for
 * `key` is admitted by `limiter`. It resolves to a decision:
 * { allowed, limit, remaining, retry_after_ns, reset_after_ns, delay_ns }. */
export function check(nc, limiter, key, cost = 1, { timeout = 2000 } = {}) {
  return request(nc, "flux.v1.check", { limiter, key, cost }, timeout);
}

/** checkBatch checks many requests ({ limiter, key, cost }) in one round
 * trip. It resolves to one result per request, in order: a decision, or
 * { error: { code, description } } for an item that failed. */
export async function checkBatch(nc, requests, { timeout = 2000 } = {}) {
  const reply = await request(nc, "flux.v1.check_batch", { requests }, timeout);
  return reply.results;
}

/** describe formats a decision for a person. */
export function describe(key, d) {
  if (d.error) {
    return `${key}: error ${d.error.code} ${d.error.description}`;
  }
  if (d.allowed) {
    return `${key}: allowed (${d.remaining} of ${d.limit} left)`;
  }
  return `${key}: denied, retry after ${d.retry_after_ns / 1e6} ms`;
}

async function main() {
  const servers = process.env.FLUX_NATS_URL || "nats://127.0.0.1:4222";
  const limiter = process.argv[2] || "default";
  const key = process.argv[3] || "alice";
  const nc = await connect({ servers, name: "flux-node example" });
  try {
    console.log("check:", describe(key, await check(nc, limiter, key)));
    const keys = [key, "bob", "carol"];
    const results = await checkBatch(nc, keys.map((k) => ({ limiter, key: k, cost: 1 })));
    results.forEach((d, i) => console.log("batch:", describe(keys[i], d)));
  } finally {
    await nc.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err.message);
    process.exit(2);
  });
}
