"""A cluster launcher that loses a sweep job for good (submitit: cancelled, node failure without
requeue; Ray: retries spent) raises out of Hydra's sweep: qrecipe ends it with one line naming
the engine and the reason, writes the report of the jobs that finished, and exits 1. The real
engines are exercised in tests/test_cluster_slurm.py (scancel) and tests/test_cluster_ray.py."""
import pytest

from qrecipe import cli
from qrecipe.report import sweep as sweep_report
from qrecipe.report.runs import config_row, record_job


def _raising(module: str, name: str, message: str):
    err = type(name, (RuntimeError,), {"__module__": module})

    def entry():
        sweep_report.LAST.update(root=ROOT[0], plots=False)  # as on_multirun_start does
        raise err(message)
    return entry


ROOT = []


@pytest.mark.parametrize("module,name", [("submitit.core.utils", "UncompletedJobError"),
                                         ("ray.exceptions", "WorkerCrashedError")])
def test_lost_job_is_one_line_and_exit_1(module, name, tmp_path, monkeypatch, capsys):
    ROOT[:] = [tmp_path / "sweep"]
    (tmp_path / "sweep").mkdir()
    monkeypatch.setattr(cli, "_hydra_entry", _raising(
        module, name, "Job 12_1 (task: 0) has not produced any output (state: NODE_FAIL)\n"
                      "Error stream produced:\n----\nTraceback (most recent call last):"))
    with pytest.raises(SystemExit) as e:
        cli._compose_and_run()
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    engine = module.split(".")[0]
    assert err[0].startswith(f"error: {engine} lost a sweep job for good ({name}: Job 12_1 "
                             "(task: 0) has not produced any output (state: NODE_FAIL)); ")
    assert f"no job finished under {tmp_path / 'sweep'}" in err[0]
    assert err[0].endswith("the same command again resumes the sweep: complete jobs are "
                           "skipped, interrupted ones resume")


def test_lost_job_writes_the_report_of_the_finished_ones(tmp_path, monkeypatch, capsys):
    root = tmp_path / "sweep"
    # a job that ended before the loss, as its row (record_job: what a job of a SLURM sweep
    # leaves when its directory does not say how it ended)
    record_job(root, config_row("bits=w4", {"method": {"name": "rtn"}, "bits": {"width": 4}},
                                "user_error", "bits.group_size=7: ..."))
    ROOT[:] = [root]
    monkeypatch.setattr(cli, "_hydra_entry", _raising("submitit.core.utils",
                                                      "UncompletedJobError", "lost"))
    with pytest.raises(SystemExit):
        cli._compose_and_run()
    err = capsys.readouterr().err
    assert f"the jobs that finished are in {root / 'summary.md'}" in err
    assert "bits=w4" in (root / "summary.md").read_text()


def test_other_exceptions_are_not_taken_for_a_lost_job():
    assert cli._engine_of(RuntimeError("x")) is None
    assert cli._engine_of(type("E", (Exception,), {"__module__": "raydium.x"})()) is None
