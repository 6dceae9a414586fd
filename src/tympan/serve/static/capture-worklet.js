// Passes each 128-sample block of the first input channel to the page (live mode).
class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) this.port.postMessage(input[0].slice(0));
    return true;
  }
}
registerProcessor("capture", CaptureProcessor);
