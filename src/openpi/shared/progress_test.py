from openpi.shared import progress


def test_line_counts_share_and_rate(capsys):
    bar = progress.Progress(20, "values", process_index=1, process_count=2, run_total=40, interval_s=0.0)
    bar.update(5)
    line = bar.line()
    assert line.startswith("[process 1/2] values: [")
    assert "5/20 frames (50% of the run's 40)" in line and "frames/s" in line and "ETA" in line
    assert bar.rate > 0
    assert "5/20 frames" in capsys.readouterr().err  # pytest's stderr is not a terminal: one line per update


def test_single_process_has_no_prefix_and_disabled_bar_is_silent(capsys):
    bar = progress.Progress(3, "collect", unit="episodes", enabled=False)
    bar.update(3)
    assert bar.done == 3 and bar.line().startswith("collect: [") and "3/3 episodes " in bar.line()
    assert capsys.readouterr().err == ""
