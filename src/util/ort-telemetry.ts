/**
 * onnxruntime 1.29+ collects telemetry on Linux and macOS too (1DS: a process event at start-up, then
 * session, model and execution-provider events; an on-disk device id and event database in
 * ~/.cache/Microsoft/DeveloperTools/.onnxruntime/, with fsyncs, and a `mat-debug-<pid>.log` in /tmp
 * for every process), uploaded to Microsoft where it can reach it. xfer turns it off: it runs on
 * people's data and clusters, and says nothing leaves the machine. `ORT_DISABLE_TELEMETRY=1` is the
 * opt-out ORT reads when its environment is created (once per process, on the first session in any
 * thread); only the main thread's environment is the process's (a worker's `process.env` is a copy
 * native code never sees), so this module is loaded by the main thread before any session or
 * inference worker exists. A value the user set (e.g. `ORT_DISABLE_TELEMETRY=0` to allow it) is kept.
 */
import { isMainThread } from 'node:worker_threads';

export const ORT_TELEMETRY_VAR = 'ORT_DISABLE_TELEMETRY';

/** Set ORT_DISABLE_TELEMETRY=1 in the process environment unless it is set already (main thread only). */
export function disableOrtTelemetry(env: NodeJS.ProcessEnv = process.env, mainThread = isMainThread): void {
  if (mainThread && env[ORT_TELEMETRY_VAR] === undefined) env[ORT_TELEMETRY_VAR] = '1';
}

disableOrtTelemetry();
