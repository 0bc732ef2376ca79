"""benchmarks/learning_curves.py: the README's comparison tables are made from run folders; the
mean +- std over seeds, the grouping by run name and the --eval JSON path are checked here."""
import json

import pytest
import yaml

from benchmarks import learning_curves


def _run(root, folder, name, returns, evals=None, distance=None):
    run = root / folder
    (run / "metrics" / "scalars" / "train").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name}))
    rows = "".join(f"{(i + 1) * 100},{r}\n" for i, r in enumerate(returns))
    (run / "metrics" / "scalars" / "train" / "episode_return.csv").write_text("step,value\n" + rows)
    if distance is not None:
        rows = "".join(f"{(i + 1) * 100},{d}\n" for i, d in enumerate(distance))
        (run / "metrics" / "scalars" / "train" / "episode_distance.csv").write_text(rows)
    for mode, figures in (evals or {}).items():
        (run / "eval").mkdir(exist_ok=True)
        (run / "eval" / f"eval_x_{mode}.json").write_text(json.dumps({"mode": mode, "episodes": 10, **figures}))
    return run


def test_eval_json_tables_pool_seeds_per_run_name(tmp_path):
    a0 = _run(tmp_path, "a0", "mamba", [0, 1, 2, 3, 4], {"deterministic": {"return": 10.0, "distance": 1.0},
                                                        "stochastic": {"return": 30.0, "distance": 5.0}},
              distance=[0, 0, 3, 3, 3])
    a1 = _run(tmp_path, "a1", "mamba", [0, 1, 2, 3, 8], {"deterministic": {"return": 20.0, "distance": 3.0},
                                                        "stochastic": {"return": 50.0, "distance": 7.0}},
              distance=[0, 0, 1, 1, 1])
    b0 = _run(tmp_path, "b0", "transformer", [5, 5, 5, 5, 5], {"deterministic": {"return": -1.0, "distance": 0.0}})
    out = tmp_path / "table"
    assert learning_curves.main([str(a0), str(a1), str(b0), "--out", str(out), "--eval-dir", "eval",
                                 "--eval-keys", "return", "distance",
                                 "--final-metrics", "train/episode_distance"]) == 0
    text = out.with_suffix(".md").read_text()
    det = text.split("Evaluation: deterministic policy")[1].split("Evaluation:")[0]
    sto = text.split("Evaluation: stochastic policy")[1]
    # two seeds of "mamba": mean +- population std of 10, 20 and of 1, 3; last training distance 3 and 1 -> 2 +- 1
    assert "| mamba | 2 | 500 | 15.00 +- 5.00 | 2.00 +- 1.00 | 2.00 +- 1.00 |" in det
    assert "| transformer | 1 | 500 | -1.00 +- 0.00 | 0.00 +- 0.00 | n/a |" in det   # no distance logged
    assert "| mamba | 2 | 500 | 40.00 +- 10.00 | 6.00 +- 1.00 |" in sto
    assert "transformer" not in sto.split("\n\n")[1]        # it has no stochastic eval: no row, not zeros
    assert out.with_suffix(".png").stat().st_size > 1000


def test_labels_pool_runs_whatever_their_names(tmp_path):
    runs = [_run(tmp_path, f"r{i}", f"tag{i}", [i, i, i]) for i in range(3)]
    out = tmp_path / "t"
    assert learning_curves.main([*map(str, runs), "--out", str(out), "--eval-keys", "return",
                                 "--labels", "A", "A", "B"]) == 0
    text = out.with_suffix(".md").read_text()
    assert "| A | 2 | 300 |" in text and "| B | 1 | 300 |" in text and "tag0" not in text.split("\n\n")[1]
    with pytest.raises(SystemExit, match="2 labels for 3 runs"):
        learning_curves.main([*map(str, runs), "--out", str(out), "--labels", "A", "B"])


def test_missing_eval_json_names_the_folder(tmp_path):
    run = _run(tmp_path, "r", "x", [1, 2, 3])
    with pytest.raises(SystemExit, match="no eval_.*json in .*r/eval"):
        learning_curves.main([str(run), "--out", str(tmp_path / "t"), "--eval-dir", "eval"])


def test_logged_eval_scalars_still_make_one_table(tmp_path):
    run = _run(tmp_path, "r", "x", [1, 2, 3])
    (run / "metrics" / "scalars" / "eval").mkdir()
    (run / "metrics" / "scalars" / "eval" / "return.csv").write_text("300,7.5\n")
    assert learning_curves.main([str(run), "--out", str(tmp_path / "t"), "--eval-keys", "return"]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "| x | 1 | 300 | 7.50 +- 0.00 | 2.0 / 2.0 |" in text


def test_wall_clock_adds_up_resumed_segments_and_eval_curves_are_drawn(tmp_path):
    """Each process logs seconds since it started; a resume's drop starts a segment that continues
    the last one, so the clock never runs backwards and ends at the segments' sum."""
    run = _run(tmp_path, "r", "x", [1, 2, 3, 4])
    (run / "metrics" / "scalars" / "time").mkdir()
    (run / "metrics" / "scalars" / "time" / "elapsed_s.csv").write_text("100,360\n200,720\n300,180\n400,540\n")
    steps, hours = learning_curves.wall_clock(run)
    assert steps.tolist() == [100, 200, 300, 400]
    assert hours.tolist() == pytest.approx([0.1, 0.2, 0.25, 0.35])
    (run / "metrics" / "scalars" / "eval").mkdir()
    (run / "metrics" / "scalars" / "eval" / "success_rate.csv").write_text("200,0.5\n400,0.75\n")
    out = tmp_path / "t"
    assert learning_curves.main([str(run), "--out", str(out), "--eval-keys", "success_rate",
                                 "--eval-curves", "success_rate"]) == 0
    text = out.with_suffix(".md").read_text()
    assert "| x | 1 | 400 | 0.75 +- 0.00 |" in text and "wall-clock 0.35 h" in text
