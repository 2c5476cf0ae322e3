/* gptlearn live, the speed wing: nn.Linear in WebAssembly SIMD, four numbers per instruction.
 *
 * live_model.js computes each Linear with plain loops, one product at a time. Where the browser runs
 * WebAssembly with SIMD (every current browser), `linear` below does the same sums with 128-bit vectors
 * (f32x4), 4 rows of x against 2 rows of the weight at a time: the same numbers to rounding, many times
 * faster (bench/README.md). The module's source is linear.wat beside this file; its bytes are inlined
 * as base64 (a page opened from file:// cannot fetch a .wasm file), written by scripts/build_live_wasm.py.
 * Weights are copied into the module's memory the first time they are used, and stay there.
 */
function gptlearnFastModule(root) {  // a named function, so the explorer can start a worker from its source
  "use strict";
  const WASM = "AGFzbQEAAAABEAJgAXsBfWAHf39/f39/fwADAwIAAQUDAQABBxMCBm1lbW9yeQIABmxpbmVhcgABCp4FAhkAIAD9HwAgAP0fAZIgAP0fAiAA/R8DkpILgQUDDH8CfQt7IARBAnQhCiAFQQJ0IRICQANAIAcgAU8NASAAIAcgCmxqIQsgCyAKaiEMIAwgCmohDSANIApqIQ5BACEIAkADQCAIIAVPDQEgAiAIIApsaiEPIA8gCmohEP0MAAAAAAAAAAAAAAAAAAAAACEV/QwAAAAAAAAAAAAAAAAAAAAAIRb9DAAAAAAAAAAAAAAAAAAAAAAhF/0MAAAAAAAAAAAAAAAAAAAAACEY/QwAAAAAAAAAAAAAAAAAAAAAIRn9DAAAAAAAAAAAAAAAAAAAAAAhGv0MAAAAAAAAAAAAAAAAAAAAACEb/QwAAAAAAAAAAAAAAAAAAAAAIRxBACEJAkADQCAJIApPDQEgDyAJav0ABAAhHSAQIAlq/QAEACEeIAsgCWr9AAQAIR8gFSAfIB395gH95AEhFSAZIB8gHv3mAf3kASEZIAwgCWr9AAQAIR8gFiAfIB395gH95AEhFiAaIB8gHv3mAf3kASEaIA0gCWr9AAQAIR8gFyAfIB395gH95AEhFyAbIB8gHv3mAf3kASEbIA4gCWr9AAQAIR8gGCAfIB395gH95AEhGCAcIB8gHv3mAf3kASEcIAlBEGohCQwACwsgAyAIQQJ0aioCACETIAMgCEECdGoqAgQhFCAGIAcgEmxqIAhBAnRqIREgESAVEAAgE5I4AgAgESAZEAAgFJI4AgQgESASaiERIBEgFhAAIBOSOAIAIBEgGhAAIBSSOAIEIBEgEmohESARIBcQACATkjgCACARIBsQACAUkjgCBCARIBJqIREgESAYEAAgE5I4AgAgESAcEAAgFJI4AgQgCEECaiEIDAALCyAHQQRqIQcMAAsLCwDHAQRuYW1lAQcBAARoc3VtAoEBAgABAAF2ASAAAXgBAVQCAXcDAWIEA25JbgUEbk91dAYBeQcBdAgBbwkBaQoDcm93CwJ4MAwCeDENAngyDgJ4Mw8CdzAQAncxEQJ5bxICeXMTAmJvFAJicBUCYTAWAmExFwJhMhgCYTMZAmIwGgJiMRsCYjIcAmIzHQF1HgF2HwFwAzMBAQYABmRvbmVfdAEGbmV4dF90AgZkb25lX28DBm5leHRfbwQGZG9uZV9pBQZuZXh0X2k=";  // linear.wat, assembled

  function start() {
    const bytes = Uint8Array.from(atob(WASM), (c) => c.charCodeAt(0));
    const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
    const memory = exports.memory, placed = new WeakMap();  // weight or bias -> its byte offset in memory
    let top = 0;  // bytes in use: the weights placed so far; each call's x and y go above

    function room(bytes) {
      const missing = bytes - memory.buffer.byteLength;
      if (missing > 0) memory.grow(Math.ceil(missing / 65536));
    }

    function place(array) {
      // The byte offset of a weight in memory, copying it there the first time.
      if (!placed.has(array)) {
        room(top + array.byteLength);
        new Float32Array(memory.buffer, top, array.length).set(array);
        placed.set(array, top);
        top += array.byteLength;
      }
      return placed.get(array);
    }

    return function linear(x, T, weight, bias) {
      // (T, in) @ weight.T + bias -> (T, out), or null when the shapes do not suit the kernel.
      const nOut = bias.length, nIn = weight.length / nOut, T4 = Math.ceil(T / 4) * 4;
      if (nIn % 4 !== 0 || nOut % 2 !== 0) return null;
      const w = place(weight), b = place(bias), xAt = top, yAt = top + T4 * nIn * 4;
      room(yAt + T4 * nOut * 4);
      const xs = new Float32Array(memory.buffer, xAt, T4 * nIn);
      xs.set(x);
      xs.fill(0, T * nIn);  // rows T..T4-1 are padding: computed, then dropped
      exports.linear(xAt, T4, w, b, nIn, nOut, yAt);
      return new Float32Array(memory.buffer, yAt, T * nOut).slice();
    };
  }

  let linear = null;
  try {
    linear = start();
  } catch (e) {
    linear = null;  // no WebAssembly SIMD here: live_model.js keeps its plain loops
  }
  root.gptlearnFast = { linear, simd: linear !== null };
}
gptlearnFastModule(typeof window !== "undefined" ? window : globalThis);
