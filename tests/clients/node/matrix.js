'use strict';
// One row of agentgate's client matrix: node-postgres (`pg`, pinned in
// package.json) logs in through the gateway with a JWT over TLS verified
// against the test CA, runs a query, parameterized and named prepared
// statements, COPY in and out (pg-copy-streams), cancels a pg_sleep(10), and
// sees an expired token refused with SQLSTATE 28P01.
//
// Run by tests/integration/test_client_matrix.py as `node matrix.js` with the
// settings in the environment: AG_HOST, AG_PORT, AG_DATABASE, AG_USER,
// AG_TOKEN, AG_EXPIRED_TOKEN, AG_CA_FILE, optional AG_REFUSED_SQLSTATE
// (default 28P01) and AG_REFUSED_PREFIX (default "token refused"; empty: the
// message is not checked). Prints one PASS/FAIL line per step; exits 1 if any
// step failed.

const fs = require('fs');
const net = require('net');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');
const pg = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined) {
    if (fallback === undefined) throw new Error(`environment variable ${name} is not set`);
    return fallback;
  }
  return v;
}

function check(ok, what) {
  if (!ok) throw new Error(what);
}

let failures = 0;
async function step(name, body) {
  try {
    await body();
    console.log(`PASS node ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL node ${name}: ${e && e.stack ? e.stack : e}${e && e.code ? ` [SQLSTATE ${e.code}]` : ''}`);
  }
}

function config(token) {
  return {
    host: env('AG_HOST', '127.0.0.1'),
    port: Number(env('AG_PORT')),
    database: env('AG_DATABASE'),
    user: env('AG_USER', 'agent'),
    password: token,
    application_name: 'agentgate-node-matrix',
    connectionTimeoutMillis: 10000,
    // Verify the chain against the test CA and the name (IP SAN 127.0.0.1).
    ssl: { ca: fs.readFileSync(env('AG_CA_FILE')), rejectUnauthorized: true },
  };
}

// A CancelRequest on a fresh plaintext connection, as libpq does: for a pg
// without Client.prototype.cancel.
function rawCancel(host, port, processID, secretKey) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host, () => {
      const buf = Buffer.alloc(16);
      buf.writeInt32BE(16, 0);
      buf.writeInt32BE(80877102, 4);
      buf.writeInt32BE(processID, 8);
      buf.writeInt32BE(secretKey, 12);
      sock.end(buf);
    });
    sock.on('error', reject);
    sock.on('close', resolve);
  });
}

async function main() {
  console.log(`node ${process.version}, pg ${require('pg/package.json').version}`);
  const client = new pg.Client(config(env('AG_TOKEN')));
  let connected = false;
  await step('login over TLS (verify-full) with a JWT', async () => {
    await client.connect();
    connected = true;
    check(client.connection.stream.encrypted === true, 'connection is not TLS');
  });
  if (!connected) {
    console.log('FAIL node: no connection, remaining steps skipped');
    process.exit(1);
  }

  await step('query', async () => {
    const r = await client.query("SELECT 1 + 1 AS two, 'héllo'::text AS t, current_setting('server_version_num')::int AS v");
    check(r.rows[0].two === 2, `two = ${r.rows[0].two}`);
    check(r.rows[0].t === 'héllo', `t = ${r.rows[0].t}`);
    check(r.rows[0].v >= 150000, `server_version_num ${r.rows[0].v}`);
    const agg = await client.query('SELECT count(*)::int AS n, sum(g)::bigint AS s FROM generate_series(1, 50000) g');
    check(agg.rows[0].n === 50000 && agg.rows[0].s === '1250025000', `aggregate ${JSON.stringify(agg.rows[0])}`);
  });

  await step('parameterized and named prepared statements', async () => {
    const r = await client.query('SELECT $1::int * 2 AS d, $2::text AS t', [21, 'x\ty']);
    check(r.rows[0].d === 42 && r.rows[0].t === 'x\ty', `unnamed: ${JSON.stringify(r.rows[0])}`);
    for (let i = 0; i < 10; i++) {
      const p = await client.query({ name: 'matrix-by-id', text: 'SELECT $1::int + 1 AS n, $2::text AS s', values: [i, `v${i}`] });
      check(p.rows[0].n === i + 1 && p.rows[0].s === `v${i}`, `named ${i}: ${JSON.stringify(p.rows[0])}`);
    }
    const ps = await client.query("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement LIKE 'SELECT $1::int + 1%'");
    check(ps.rows[0].n === 1, `server has ${ps.rows[0].n} matching prepared statements`);
  });

  await step('COPY in and out (pg-copy-streams)', async () => {
    await client.query('CREATE TEMP TABLE node_copy (id int, label text)');
    const rows = 20000;
    const lines = [];
    for (let i = 1; i <= rows; i++) lines.push(`${i}\t${i % 3 === 0 ? '\\N' : 'row\\t' + i}\n`);
    const input = lines.join('');
    await pipeline(Readable.from([input]), client.query(copyFrom('COPY node_copy FROM STDIN')));
    const count = await client.query('SELECT count(*)::int AS n FROM node_copy');
    check(count.rows[0].n === rows, `copied ${count.rows[0].n} rows`);
    const chunks = [];
    await pipeline(client.query(copyTo('COPY (SELECT * FROM node_copy ORDER BY id) TO STDOUT')),
      new Writable({ write(chunk, _enc, cb) { chunks.push(chunk); cb(); } }));
    check(Buffer.concat(chunks).toString() === input, 'COPY out differs from COPY in');
  });

  await step('cancel pg_sleep(10)', async () => {
    const started = Date.now();
    const query = new pg.Query('SELECT pg_sleep(10)');
    const done = new Promise((resolve) => {
      query.on('error', (e) => resolve(e));
      query.on('end', () => resolve(null));
    });
    client.query(query);
    await new Promise((r) => setTimeout(r, 1000));
    if (typeof pg.Client.prototype.cancel === 'function') {
      // pg's own cancel: a new connection that only sends a CancelRequest
      // (plaintext, like libpq's PQcancel).
      const canceller = new pg.Client({ ...config(''), ssl: false });
      canceller.cancel(client, query);
    } else {
      await rawCancel(config('').host, config('').port, client.processID, client.secretKey);
    }
    const err = await done;
    check(err !== null, 'pg_sleep(10) was not canceled');
    check(err.code === '57014', `SQLSTATE ${err.code}: ${err.message}`);
    const seconds = (Date.now() - started) / 1000;
    check(seconds < 8, `cancel took ${seconds} s`);
    const r = await client.query('SELECT 42 AS n');
    check(r.rows[0].n === 42, 'session unusable after cancel');
  });

  await step('close', async () => { await client.end(); });

  const state = env('AG_REFUSED_SQLSTATE', '28P01');
  await step(`expired token refused with SQLSTATE ${state}`, async () => {
    const c = new pg.Client(config(env('AG_EXPIRED_TOKEN')));
    let err = null;
    try {
      await c.connect();
    } catch (e) {
      err = e;
    }
    if (err === null) {
      await c.end();
      throw new Error('logged in with an expired token');
    }
    check(err.code === state, `SQLSTATE ${err.code}: ${err.message}`);
    const prefix = env('AG_REFUSED_PREFIX', 'token refused');
    check(prefix === '' || String(err.message).startsWith(prefix), `message: ${err.message}`);
    console.log(`  refused: ${err.severity} ${err.code} ${err.message}`);
  });

  console.log(failures === 0 ? 'node: all steps passed' : `node: ${failures} step(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((e) => {
  console.log(`FAIL node: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
