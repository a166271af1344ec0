import Foundation
import SwiftQuant
import XCTest

/// GPTQ and the M1/M2 constraints on every linear of the real SmolLM2-135M (skipped without
/// `$SWIFTQUANT_SMOLLM2`; `make test` sets it). Small calibration budgets keep them to seconds.
final class SmolLM2GPTQTests: XCTestCase {
    func smolLM2() throws -> LoadedModel {
        guard let path = ProcessInfo.processInfo.environment["SWIFTQUANT_SMOLLM2"], !path.isEmpty,
              FileManager.default.fileExists(atPath: path) else {
            print("skip: SWIFTQUANT_SMOLLM2 is not set")
            throw XCTSkip("SWIFTQUANT_SMOLLM2 is not set")
        }
        return try LoadedModel.load(path: path)
    }

    /// Calibration windows from real text (a WikiText-like paragraph repeated with variations is not needed:
    /// the model's own tokenizer on a fixed English text).
    func windows(_ loaded: LoadedModel, count: Int, length: Int) throws -> [[Int32]] {
        let text = (0..<200).map { i in
            "Section \(i): The tower is 324 metres tall, about the same height as an 81-storey building. "
                + "It was the tallest man-made structure in the world for \(41 - i % 7) years, until the Chrysler "
                + "Building in New York City was finished in 1930. Prices rose by \(i % 13) percent that year. "
        }.joined()
        return try Calibration.windows(tokens: try XCTUnwrap(loaded.tokenizer).encode(text), count: count,
                                       length: length, seed: 2)
    }

    /// On every linear of SmolLM2 (30 blocks × 7), GPTQ's output error ‖(W − Ŵ)X‖ on the calibration inputs is
    /// at most RTN's on the same grid (INT3 g128, quantized path, 4 × 256 tokens).
    func testGPTQOutputErrorAtMostRTNOnEveryLinear() throws {
        let loaded = try smolLM2()
        let r = QuantRecipe(method: .gptq, wformat: "int3", groupSize: 128, nsamples: 4, seqlen: 256)
        let result = try CalibrationPipeline(recipe: r, progress: false).run(loaded, windows: try windows(loaded, count: 4, length: 256))
        var checked = 0, ratios: [Double] = []
        for report in result.reports {
            for (name, e) in try XCTUnwrap(report.linearErrors) {
                XCTAssertLessThanOrEqual(e[0], e[1], "block \(report.block) \(name): GPTQ \(e[0]) > RTN \(e[1])")
                ratios.append(e[0] / e[1])
                checked += 1
            }
        }
        XCTAssertEqual(checked, 30 * 7)
        ratios.sort()
        print(String(format: "GPTQ/RTN output error on %d SmolLM2 linears: median %.3f, max %.3f", checked,
                     ratios[ratios.count / 2], ratios.last!))
    }

    /// Every E2M1 weight of SmolLM2 quantized with M1 or M2 (RTN on all 210 linears, and GPTQ) times its group's
    /// factor `ŝ / max_g ŝ` (a power of two 2^k, −8 ≤ k ≤ 0) is exactly representable in E4M3: FP4 → FP8 is an
    /// exponent shift with one scale per row.
    func testScaleConstraintsMakeEverySmolLM2WeightFP8Exact() throws {
        let loaded = try smolLM2()
        let e2m1 = MinifloatFormat.e2m1, e4m3 = MinifloatFormat.e4m3fn
        var checked = 0
        var exact = [Bool](repeating: false, count: 256 * 32)  // (code, k) pairs already checked
        for (method, constraint) in [(QuantRecipe.Method.rtn, ScaleConstraint.m1), (.rtn, .m2), (.gptq, .m2), (.gptq, .m1)] {
            let copy = try loaded.fresh()
            let r = QuantRecipe(method: method, wformat: "e2m1", groupSize: 128, nsamples: 2, seqlen: 128,
                                scaleConstraint: constraint)
            let w = method == .gptq ? try windows(copy, count: 2, length: 128) : []
            let result = try CalibrationPipeline(recipe: r, progress: false).run(copy, windows: w)
            XCTAssertEqual(result.quantized.count, 210)
            for (name, q) in result.quantized {
                let g = q.groupCount, width = q.config.groupWidth(cols: q.cols)
                for row in 0..<q.rows {
                    let scales = q.scales[(row * g)..<((row + 1) * g)]
                    let c = scales.max()!
                    for (gi, s) in scales.enumerated() {
                        let f = s / c
                        XCTAssertEqual(f.significand, 1, "\(method) \(constraint) \(name) row \(row) group \(gi): \(f)")
                        XCTAssertTrue(f.exponent >= -8 && f.exponent <= 0, "\(name) row \(row): factor 2^\(f.exponent)")
                        if constraint == .m1 { XCTAssertEqual(s.significand, 1, "M1 scale \(s) is not a power of two") }
                        for col in (gi * width)..<min((gi + 1) * width, q.cols) {
                            let code = q.codes[row * q.cols + col]
                            checked += 1
                            // v depends only on (code, k): check each pair once.
                            let key = Int(code) * 32 + Int(f.exponent) + 16
                            guard !exact[key] else { continue }
                            exact[key] = true
                            let v = e2m1.decode(code) * f
                            if e4m3.decode(e4m3.encode(v)).bitPattern != v.bitPattern {
                                XCTFail("\(method) \(constraint) \(name) [\(row), \(col)]: \(v) is not exact in E4M3")
                                return
                            }
                        }
                    }
                }
            }
        }
        print("M1/M2 on SmolLM2: \(checked) E2M1 weights (\(exact.filter { $0 }.count) distinct code × 2^k values) exact in E4M3 after the shift")
        XCTAssertEqual(checked, 4 * 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576))
    }
}
