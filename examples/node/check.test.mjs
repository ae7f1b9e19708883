// Tests of check.mjs against a running flux-node: `node --test` with
// FLUX_NATS_URL set to the node's NATS URL and FLUX_LIMITER to a limiter
// of capacity 3 that refills slowly (example_test.go starts such a node
// and runs this). Without FLUX_NATS_URL the tests are skipped.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { check, checkBatch, describe, FluxError } from "./check.mjs";

const url = process.env.FLUX_NATS_URL;
const limiter = process.env.FLUX_LIMITER || "api";
const skip = url ? false : "FLUX_NATS_URL is not set (run through go test ./examples/node)";
const run = `${process.pid}-${Date.now()}`;
let nc;

before(async () => {
  if (!skip) nc = await connect({ servers: url, name: "flux-node example test" });
});

after(async () => {
  if (nc) await nc.close();
});

function assertDecision(d) {
  assert.equal(typeof d.allowed, "boolean");
  for (const f of ["limit", "remaining", "retry_after_ns", "reset_after_ns", "delay_ns"]) {
    assert.ok(Number.isInteger(d[f]), `${f} is ${d[f]}`);
  }
}

test("a fresh key is allowed", { skip }, async () => {
  const d = await check(nc, limiter, `fresh-${run}`);
  assertDecision(d);
  assert.equal(d.allowed, true);
  assert.equal(d.limit, 3);
  assert.equal(d.remaining, 2);
  assert.equal(d.retry_after_ns, 0);
  assert.match(describe("k", d), /^k: allowed \(2 of 3 left\)$/);
});

test("the request after the capacity is denied with a retry time", { skip }, async () => {
  const key = `burst-${run}`;
  const got = [];
  for (let i = 0; i < 4; i++) got.push(await check(nc, limiter, key));
  assert.deepEqual(got.map((d) => d.allowed), [true, true, true, false]);
  const denied = got[3];
  assertDecision(denied);
  assert.equal(denied.remaining, 0);
  assert.ok(denied.retry_after_ns > 0);
  assert.match(describe(key, denied), /denied, retry after/);
});

test("cost 0 peeks without consuming", { skip }, async () => {
  const key = `peek-${run}`;
  const a = await check(nc, limiter, key, 0);
  const b = await check(nc, limiter, key, 0);
  assert.equal(a.remaining, 3);
  assert.equal(b.remaining, 3);
});

test("a batch answers every item in order, failed items included", { skip }, async () => {
  const results = await checkBatch(nc, [
    { limiter, key: `batch-a-${run}`, cost: 1 },
    { limiter: "no-such-limiter", key: "x", cost: 1 },
    { limiter, key: `batch-b-${run}`, cost: 3 },
  ]);
  assert.equal(results.length, 3);
  assertDecision(results[0]);
  assert.equal(results[0].allowed, true);
  assert.equal(results[1].error.code, 404);
  assert.equal(results[2].allowed, true);
  assert.equal(results[2].remaining, 0);
});

test("a bad request is a FluxError with the service's code", { skip }, async () => {
  await assert.rejects(check(nc, "no-such-limiter", "x"), (err) => {
    assert.ok(err instanceof FluxError);
    assert.equal(err.code, 404);
    return true;
  });
  await assert.rejects(check(nc, limiter, ""), (err) => err instanceof FluxError && err.code === 400);
});
