// Bridge between the Darkmesh test suite and the real @hellocoop/httpsig package.
//
// Reads one JSON value from stdin: a request object, or an array of them, and prints the
// answers as JSON (same shape). Requests:
//   {"op": "verify", "request": {method, authority, path, query, headers, body_b64},
//    "options": {maxClockSkew}}                   -> {verified, error, signatureError, ...}
//   {"op": "sign", url, method, headers, body, signingKey, jwt, components?}
//                                                  -> {headers: {name: value}}
// "sign" runs httpsig's fetch(url, {..., signatureKey: {type: 'jwt', jwt}, label: 'aasig',
// dryRun: true}), so nothing goes on the network.
import { fetch as httpsigFetch, verify } from '@hellocoop/httpsig';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function doVerify(item) {
  const r = item.request;
  const request = {
    method: r.method,
    authority: r.authority,
    path: r.path,
    headers: r.headers,
  };
  if (r.query !== undefined && r.query !== null && r.query !== '') request.query = r.query;
  if (r.body_b64 !== undefined && r.body_b64 !== null) {
    request.body = Buffer.from(r.body_b64, 'base64');
  }
  const result = await verify(request, { maxClockSkew: 60, ...(item.options || {}) });
  return {
    verified: result.verified === true,
    error: result.error ?? null,
    signatureError: result.signatureError ?? null,
    label: result.label ?? null,
    keyType: result.keyType ?? null,
    thumbprint: result.thumbprint ?? null,
  };
}

async function doSign(item) {
  const options = {
    method: item.method || 'GET',
    headers: item.headers || {},
    signingKey: item.signingKey,
    signatureKey: { type: 'jwt', jwt: item.jwt },
    label: 'aasig',
    dryRun: true,
  };
  if (item.body !== undefined && item.body !== null) options.body = item.body;
  if (item.components) options.components = item.components;
  const { headers } = await httpsigFetch(item.url, options);
  const out = {};
  headers.forEach((value, name) => { out[name] = value; });
  return { headers: out };
}

async function handle(item) {
  try {
    if (item.op === 'verify') return await doVerify(item);
    if (item.op === 'sign') return await doSign(item);
    return { exception: `unknown op ${JSON.stringify(item.op)}` };
  } catch (err) {
    return { exception: String(err && err.message ? err.message : err) };
  }
}

const input = JSON.parse(await readStdin());
const output = Array.isArray(input) ? await Promise.all(input.map(handle)) : await handle(input);
process.stdout.write(JSON.stringify(output));
