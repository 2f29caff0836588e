"""The benchmarks run end to end on a small budget (their figures are for `seld bench`, not tests)."""

import seld.benchmarks.stream as bench_stream


def test_bench_stream_reports_parts_reference_and_the_machines_jitter(monkeypatch):
    for name, value in (("CHUNKS", 60), ("WARMUP", 5), ("REPEATS", 1), ("SCENE_SECONDS", 3.0)):
        monkeypatch.setattr(bench_stream, name, value)
    result = bench_stream.run()
    assert result["chunks"] == 60 and result["ort_threads"] == 1
    assert result["providers"] == ["CPUExecutionProvider"]
    assert set(result["parts"]) == {"host_fft", "graph", "decode", "tracking_and_frames"}
    for entry in (result["per_chunk"], result["reference_audio_graph_dense_dft"], result["jitter_floor"]):
        assert 0 < entry["p50_ms"] <= entry["p99_ms"]
    assert result["jitter_floor"]["p99_over_p50"] >= 1
    assert result["latency"]["window_plus_chunk_ms"] == 140
    table = bench_stream.format_table(result)
    assert "machine jitter" in table and "Stream.push" in table
