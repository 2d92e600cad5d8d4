"""What training shows: the epoch line, the bar on a terminal only, quiet."""

import io

from qmtik.progress import Reporter, format_epoch

RECORD = {"epoch": 3, "loss": 0.31234, "train_metric": 0.889, "val_metric": 0.875, "quantized": True, "seconds": 1.234}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_epoch_line_has_loss_accuracies_arithmetic_and_time():
    line = format_epoch(RECORD, 8, "classification")
    assert line == "epoch 3/8  loss 0.3123  train acc  88.90%  val acc  87.50%  int8  1.23 s"


def test_regression_line_shows_the_error_and_float():
    line = format_epoch({**RECORD, "val_metric": None, "train_metric": 0.01234, "quantized": False}, 10, "regression")
    assert line == "epoch  3/10  loss 0.3123  train mse 0.01234  float  1.23 s"


def test_bar_is_drawn_on_a_terminal_and_cleared_before_the_line():
    out, bar = io.StringIO(), Terminal()
    reporter = Reporter(stream=out, bar_stream=bar)
    reporter.start_epoch(3, 8, 10)
    reporter.step(10)
    reporter.end_epoch(RECORD)
    assert "[" + "#" * 30 + "] 10/10" in bar.getvalue()
    assert bar.getvalue().endswith("\r\033[K")
    assert out.getvalue() == format_epoch(RECORD, 8, "classification") + "\n"


def test_no_bar_when_not_a_terminal_and_nothing_when_quiet():
    out, bar = io.StringIO(), io.StringIO()
    reporter = Reporter(stream=out, bar_stream=bar)
    reporter.start_epoch(1, 1, 5)
    reporter.step(5)
    reporter.end_epoch({**RECORD, "epoch": 1})
    assert bar.getvalue() == "" and out.getvalue().startswith("epoch 1/1")
    quiet_out = io.StringIO()
    quiet = Reporter(stream=quiet_out, bar_stream=Terminal(), quiet=True)
    quiet.start_epoch(1, 1, 5)
    quiet.step(5)
    quiet.end_epoch(RECORD)
    quiet.message("hello")
    assert quiet_out.getvalue() == ""
