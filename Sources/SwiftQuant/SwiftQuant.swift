// SwiftQuant: post-training quantization of large language models (RTN, OmniQuant LWC, ZeroQuant-FP formats; GPTQ is not implemented yet).
//
// Layout, in data-flow order: Tensor (storage, BLAS, parallel loops) → Formats (integer grids, minifloats,
// bit packing) → Quantizers (granularity, policies, fake-quant, QuantizedTensor) → IO → Models → Autodiff →
// Algorithms → Pipeline → Export → Eval.
