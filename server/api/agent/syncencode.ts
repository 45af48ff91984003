/**
 * SyncAuthorized messages with pre-encoded entries. A snapshot for an agent is mostly its
 * entries' protobuf bytes, and the same entries go to every agent that reconnects (a reconnect
 * storm encodes the same 100,000 entries again): each entry is encoded once per version
 * (cached by object, checked against its revision) and copied into the messages that carry it.
 *
 * The message is the generated encoding of everything but `entries`, followed by one field-3
 * record per entry: protobuf allows fields in any order and repeated fields to be split, so any
 * decoder reads exactly the message the generated encoder would have produced (tests compare).
 */
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { AgentAPIService, SyncAuthorizedResponse } from '../../../proto/gen/spindle/agent/v1/agent.js';
import { Entry } from '../../../proto/gen/spindle/types/v1/types.js';
import type { RegistrationEntry } from '../../datastore/types.js';
import { entryToProto } from '../convert.js';

/** Field 3 (entries), wire type 2 (length-delimited). */
const ENTRIES_TAG = (3 << 3) | 2;

const encoded = new WeakMap<RegistrationEntry, { revision: number; bytes: Uint8Array }>();

/** One writer for entry encodings: it keeps its grown buffer between entries (finish() copies). */
const entryWriter = new BinaryWriter();

/** The entry's protobuf encoding (types.v1.Entry), cached per entry object and revision. */
export function encodedEntry(e: RegistrationEntry): Uint8Array {
  const hit = encoded.get(e);
  if (hit !== undefined && hit.revision === e.revisionNumber) return hit.bytes;
  const bytes = Entry.encode(entryToProto(e), entryWriter).finish();
  encoded.set(e, { revision: e.revisionNumber, bytes });
  return bytes;
}

/** Bytes of `n` as a protobuf varint (n < 2^32). */
function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n >>>= 7;
    len++;
  }
  return len;
}

/** `msg` (its `entries` ignored) with `entries` as its entries, encoded into one buffer. */
export function encodeSyncResponse(msg: SyncAuthorizedResponse, entries: readonly RegistrationEntry[]): Buffer {
  const head = SyncAuthorizedResponse.encode(msg.entries.length === 0 ? msg : { ...msg, entries: [] }).finish();
  const parts = entries.map(encodedEntry);
  let total = head.length;
  for (const p of parts) total += 1 + varintLength(p.length) + p.length;
  const out = Buffer.allocUnsafe(total);
  out.set(head, 0);
  let pos = head.length;
  for (const p of parts) {
    out[pos++] = ENTRIES_TAG;
    let n = p.length;
    while (n >= 0x80) {
      out[pos++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    out[pos++] = n;
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * The AgentAPI service definition with a SyncAuthorized response serializer that passes
 * already-encoded messages (Buffers from encodeSyncResponse) through unchanged.
 */
export const agentApiServiceDefinition: typeof AgentAPIService = {
  ...AgentAPIService,
  syncAuthorized: {
    ...AgentAPIService.syncAuthorized,
    responseSerialize: (value: SyncAuthorizedResponse | Buffer): Buffer =>
      Buffer.isBuffer(value) ? value : AgentAPIService.syncAuthorized.responseSerialize(value),
  },
};
