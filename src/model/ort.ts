/**
 * onnxruntime-node, loaded with its telemetry turned off first (util/ort-telemetry.ts). Every module
 * of xfer that uses ORT imports it from here.
 */
import '../util/ort-telemetry.js';
import ort from 'onnxruntime-node';

export default ort;
