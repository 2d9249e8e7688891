/**
 * The one synchronous read of the fs backend, in a module of its own so that a worker thread can load it
 * without the rest of the backend: reads through a descriptor (`ObjectReader.fd`) the main thread opened.
 *
 * @module
 */
import { readSync } from 'node:fs';
import { MAX_IO_BYTES } from './internal.js';

/**
 * Reads `into.byteLength` bytes at `position` of the open file descriptor `fd`, synchronously. Returns
 * how many bytes were read (fewer at end of file); system errors are thrown as they are.
 */
export function readDescriptor(fd: number, into: Uint8Array, position: number): number {
  let done = 0;
  while (done < into.byteLength) {
    const n = readSync(fd, into, done, Math.min(into.byteLength - done, MAX_IO_BYTES), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
