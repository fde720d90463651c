/**
 * A short digest naming this machine's kind of CPU: what hardware-specific compiled artefacts (ORT's
 * optimized CPU graphs, whose NCHWc layout follows the vector width) must be keyed by. Platform,
 * architecture and, on Linux, the first CPU's vendor, model and feature flags from /proc/cpuinfo
 * (elsewhere os.cpus()'s model name).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { sha256Hex } from './hash.js';

/** The identifying lines of the first CPU in /proc/cpuinfo text (x86 and ARM field names). */
export function cpuinfoIdentity(text: string): string[] {
  const first = text.split(/\n\s*\n/)[0] ?? '';
  const wanted = /^(vendor_id|model name|cpu family|model|stepping|flags|Features|CPU implementer|CPU architecture|CPU variant|CPU part|isa|uarch)\s*:/;
  return first
    .split('\n')
    .filter((l) => wanted.test(l))
    .map((l) => l.replace(/\s+/g, ' ').trim());
}

let memo: string | null = null;

/** 16 hex digits; the same on machines with the same kind of CPU. */
export function cpuSignature(): string {
  if (memo !== null) return memo;
  let lines: string[] = [];
  if (process.platform === 'linux') {
    try {
      lines = cpuinfoIdentity(readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      /* no /proc: fall back below */
    }
  }
  if (lines.length === 0) lines = [`model name: ${os.cpus()[0]?.model ?? 'unknown'}`];
  memo = sha256Hex([process.platform, process.arch, ...lines].join('\n')).slice(0, 16);
  return memo;
}
