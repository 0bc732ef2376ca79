"""benchmarks/gpu_speed.py's report path (runs anywhere: no measuring, rows from CSV)."""
import csv

from benchmarks import gpu_speed


def test_report_from_csv_computes_target_ratios(tmp_path):
    rows = [("train", "mamba1 ours kernels", 1024, 8, "", 6.0, 300.0),
            ("train", "mamba1 mamba-ssm", 1024, 8, "", 2.0, 100.0),
            ("train", "gru cuDNN", 1024, 8, "", 30.0, ""),
            ("acting", "mamba1 ours kernels graphed", 1, 1, 4, 0.2, ""),
            ("acting", "mamba1 ours kernels graphed", 1, 1, 1, 0.1, ""),
            ("acting", "gru cuDNN eager", 1, 1, 1, 0.4, "")]
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "name", "dtype", "T", "batch", "layers", "ms", "peak_mb", "note"])
        for sec, name, T, B, L, ms, peak in rows:
            w.writerow([sec, name, "fp32", T, B, L, ms, peak, ""])
    assert gpu_speed.main(["--from-csv", str(path), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "gpu_speed.md").read_text()
    assert "| ours mamba1 (resets+state) / mamba-ssm Mamba, T=1024 (target <= 1.1) | 3.000 |" in md
    assert "| cuDNN GRU / ours mamba1, T=1024 (target >= 15) | 5.000 |" in md
    assert "| mamba1 ours kernels / mamba1 mamba-ssm peak memory, T=1024 (target <= 1.3) | 3.000 |" in md
    assert "| mamba1 graphed step per layer at B=1 (4 layers / 4), ms (target <= 0.05) | 0.050 |" in md
    assert "| cuDNN GRU eager / mamba1 graphed, B=1, 1 layer (target >= 3) | 4.000 |" in md
    assert (tmp_path / "out" / "gpu_speed_train.png").exists()
