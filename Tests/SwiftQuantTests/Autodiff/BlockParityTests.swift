import Foundation
import SwiftQuant
import XCTest

/// The one block graph against PyTorch autograd through transformers' own decoder layers (fixtures from
/// Fixtures/make_block_fixtures.py): tiny Llama (GQA), Qwen2 (q/k/v biases) and OPT (LayerNorm with bias, biased
/// linears, ReLU), layers 0 and 1, LWC on every linear (W3 g24 asymmetric with ragged groups, and W4 per-channel
/// symmetric). Forward outputs, the MSE loss, the LWC parameter gradients and the input gradient agree to a
/// relative error ≤ 1e-4 (max |diff| / max |ref|).
final class BlockParityTests: XCTestCase {
    struct Case { let name: String; let model: String; let layer: Int; let bits: Int; let group: Int; let symmetric: Bool
                  let linears: [String] }

    static let fixtures: (SafetensorsFile, [Case]) = {
        do {
            guard let url = Bundle.module.url(forResource: "block_fixtures", withExtension: "safetensors", subdirectory: "Fixtures")
            else { fatalError("block fixtures missing from the test bundle") }
            let f = try SafetensorsFile(path: url.path)
            let meta = try JSONSerialization.jsonObject(with: Data(f.metadata["meta"]!.utf8)) as! [String: Any]
            let cases = (meta["cases"] as! [String: [String: Any]]).map { name, c in
                Case(name: name, model: c["model"] as! String, layer: (c["layer"] as! NSNumber).intValue,
                     bits: (c["bits"] as! NSNumber).intValue, group: (c["group_size"] as! NSNumber).intValue,
                     symmetric: (c["symmetric"] as! NSNumber).boolValue, linears: c["linears"] as! [String])
            }
            return (f, cases.sorted { $0.name < $1.name })
        } catch { fatalError("block fixtures: \(error)") }
    }()

    func t(_ name: String) throws -> Tensor { try Self.fixtures.0.float32(name).copy() }

    func testEveryFamilyAgainstTransformersAutograd() throws {
        let cases = Self.fixtures.1
        XCTAssertEqual(Set(cases.map(\.model)), ["llama_gqa", "qwen2", "opt"])
        for c in cases {
            let loaded = try LoadedModel.load(path: Fixtures.url("tiny/\(c.model)").path)
            let model = loaded.model
            XCTAssertEqual(model.blockLinearNames, c.linears, "\(c.name): execution order")
            let p = c.name + "."
            let x = try t(p + "x"), target = try t(p + "target")
            let T = x.shape[0]
            let block = try model.loadBlock(c.layer)
            // FP: the block graph (recording) and the inference forward both match transformers' layer.
            let fp = try model.blockGraph(block, maxRows: T).forward(x).copy()
            assertClose(fp.array, try t(p + "fp_out").array, 1e-5, "\(c.name) fp_out (graph)")
            assertClose(try model.forwardBlock(c.layer, hidden: x).array, try t(p + "fp_out").array, 1e-5,
                        "\(c.name) fp_out (inference)")
            // LWC on every linear.
            let lwc = try model.blockSpec.linears.map { l in
                try LWCTransform(rows: l.outFeatures, columns: l.inFeatures, bits: c.bits, group: c.group == 0 ? .perRow : .columns(c.group),
                                 symmetric: c.symmetric, u: try t(p + l.name + ".u"), l: try t(p + l.name + ".l"))
            }
            let graph = try model.blockGraph(block, hooks: lwc.map { LinearHooks(weight: $0) }, maxRows: T)
            let y = try graph.forward(x)
            assertClose(y.array, try t(p + "q_out").array, 1e-4, "\(c.name) q_out")
            let loss = Autodiff.MSELoss.forward(pred: y.pointer, target: target.pointer, count: y.count)
            XCTAssertEqual(Double(loss), Double(try t(p + "loss").array[0]), accuracy: 1e-4 * Double(loss), "\(c.name) loss")
            let dLoss = Tensor(zeros: y.shape)
            Autodiff.MSELoss.backward(pred: y.pointer, target: target.pointer, dPred: dLoss.pointer, count: y.count)
            for l in lwc { l.zeroGradients() }
            let dx = try graph.backward(dLoss)
            assertClose(dx.array, try t(p + "dx").array, 1e-4, "\(c.name) dx")
            for (k, l) in model.blockSpec.linears.enumerated() {
                assertClose(lwc[k].gradU.array, try t(p + l.name + ".du").array, 1e-4, "\(c.name) \(l.name) du")
                assertClose(lwc[k].gradL.array, try t(p + l.name + ".dl").array, 1e-4, "\(c.name) \(l.name) dl")
            }
        }
    }

    /// Every linear's observer sees its input once per forward, with the right width; an input quantizer changes
    /// what the linear consumes (and so the output).
    func testHooksSeeEveryLinear() throws {
        for family in ["llama_gqa", "qwen2", "opt"] {
            let model = try LoadedModel.load(path: Fixtures.url("tiny/\(family)").path).model
            let spec = model.blockSpec
            var seen: [String: Int] = [:]
            let hooks = spec.linears.map { l in
                LinearHooks(observer: { _, rows, features in
                    XCTAssertEqual(features, l.inFeatures)
                    seen[l.name, default: 0] += rows
                })
            }
            let x = try model.embed((0..<8).map { Int32($0) })
            let plain = x.copy()
            try model.forward(block: try model.loadBlock(0), hidden: plain, workspace: Workspace())
            let observed = x.copy()
            try model.forward(block: try model.loadBlock(0), hidden: observed, workspace: Workspace(), hooks: hooks)
            XCTAssertEqual(seen, Dictionary(uniqueKeysWithValues: spec.linears.map { ($0.name, 8) }), family)
            XCTAssertEqual(observed.array, plain.array, "\(family): observers change nothing")
            final class Sign: ActivationQuantizer {
                func quantize(_ x: UnsafeMutablePointer<Float>, rows: Int, features: Int) {
                    for i in 0..<(rows * features) { x[i] = x[i] >= 0 ? 1 : -1 }
                }
            }
            let q = Sign()
            let quantized = x.copy()
            try model.forward(block: try model.loadBlock(0), hidden: quantized, workspace: Workspace(),
                              hooks: spec.linears.map { _ in LinearHooks(input: q) })
            XCTAssertNotEqual(quantized.array, plain.array, "\(family): the input quantizer is applied")
        }
    }
}
