"""Every state change of a run, on SQLite and on a real PostgreSQL server: conditional updates that
a racing writer cannot undo, times from the database's clock, workers started exactly once."""

import threading
import time

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import submit
from cnn_ablation.storage import clock, lifecycle, workers
from cnn_ablation.storage.records import RunLost, RunNotFound
from cnn_ablation.storage.runs import delete_run, find_run
from cnn_ablation.storage.status import RunStatus

pytestmark = pytest.mark.both_backends
QUICK = RunConfig(dataset="synthetic:100", epochs=2, batch_size=16)


def test_a_claim_takes_the_oldest_queued_run_once(engine):
    ids = submit(engine, [QUICK.with_changes(seed=s) for s in range(3)])
    first = lifecycle.claim(engine, "w1", "h", "cpu", 5.0)
    second = lifecycle.claim(engine, "w2", "h", "cpu", 5.0)
    assert (first.id, second.id) == (ids[0], ids[1])
    assert first.status == RunStatus.RUNNING and first.worker_id == "w1"
    assert lifecycle.claim(engine, "w3", "h", "cpu", 5.0).id == ids[2]
    assert lifecycle.claim(engine, "w4", "h", "cpu", 5.0) is None


def test_parallel_claims_never_give_one_run_twice(engine):
    ids = submit(engine, [QUICK.with_changes(seed=s) for s in range(40)])
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name):
        while (run := lifecycle.claim(engine, name, "h", "cpu", 5.0)) is not None:
            with lock:
                claimed.append(run.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids


def test_times_come_from_the_database_clock(engine):
    (run_id,) = submit(engine, [QUICK])
    before = clock.now(engine)
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    run = find_run(engine, run_id)
    after = clock.now(engine)
    assert before - 1 <= run.created_at <= run.started_at <= after + 1
    assert run.heartbeat_at == pytest.approx(run.started_at, abs=1)
    assert abs(after - time.time()) < 60  # this host's clock is right, so they agree here


def test_cancel_of_a_queued_run_and_of_a_running_one(engine):
    queued, running = submit(engine, [QUICK, QUICK.with_changes(seed=1)])
    assert lifecycle.claim(engine, "w", "h", "cpu", 5.0).id == queued
    # the first was claimed: cancel only asks it to stop; the second never starts
    assert lifecycle.request_cancel(engine, queued) == RunStatus.RUNNING
    assert lifecycle.request_cancel(engine, running, now=True) == RunStatus.CANCELLED
    assert find_run(engine, queued).cancel_mode == "after_epoch"
    assert lifecycle.beat(engine, queued, "w") == "after_epoch"
    assert lifecycle.claim(engine, "w", "h", "cpu", 5.0) is None
    with pytest.raises(RunNotFound):
        lifecycle.request_cancel(engine, 999)


def test_a_cancel_racing_claims_never_leaves_a_cancelled_run_in_training(engine):
    ids = submit(engine, [QUICK.with_changes(seed=s) for s in range(30)])
    owners: dict[int, str] = {}

    def claimer(name):
        while (run := lifecycle.claim(engine, name, "h", "cpu", 5.0)) is not None:
            owners[run.id] = name

    def canceller():
        for run_id in ids[::2]:
            lifecycle.request_cancel(engine, run_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(3)]
    threads.append(threading.Thread(target=canceller))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run_id in ids:
        run = find_run(engine, run_id)
        if run.status == RunStatus.CANCELLED:  # cancelled before any claim: nobody trains it
            assert run_id not in owners and run.started_at is None
        else:  # claimed: its trainer may write, and is told to stop if it was cancelled
            assert run.status == RunStatus.RUNNING and owners[run_id] == run.worker_id
            lifecycle.record_epoch(engine, run_id, run.worker_id, 1, {"loss": 1.0}, 1.0)


def test_a_process_whose_run_was_taken_away_cannot_write_to_it(engine):
    (run_id,) = submit(engine, [QUICK])
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    assert lifecycle.finish(engine, run_id, RunStatus.FAILED, error="reaped")
    with pytest.raises(RunLost):
        lifecycle.beat(engine, run_id, "w")
    with pytest.raises(RunLost):
        lifecycle.report_progress(engine, run_id, "w", "training", 1, 3, 10)
    with pytest.raises(RunLost):
        lifecycle.record_epoch(engine, run_id, "w", 1, {"loss": 1.0}, 1.0)
    assert not lifecycle.finish(engine, run_id, RunStatus.COMPLETED, worker_id="w")
    run = find_run(engine, run_id)
    assert run.status == RunStatus.FAILED and run.error == "reaped"


def test_another_worker_cannot_finish_or_requeue_a_run_it_does_not_own(engine):
    (run_id,) = submit(engine, [QUICK])
    lifecycle.claim(engine, "owner", "h", "cpu", 5.0)
    assert not lifecycle.finish(engine, run_id, RunStatus.COMPLETED, worker_id="other")
    assert not lifecycle.requeue(engine, run_id, "other", "/x.keras", 1, "note")
    assert lifecycle.requeue(engine, run_id, "owner", "/x.keras", 1, "worker stopped")
    run = find_run(engine, run_id)
    assert run.status == RunStatus.QUEUED and run.resume_epoch == 1 and run.worker_id is None
    assert "worker stopped" in run.notes
    assert lifecycle.claim(engine, "next", "h", "cpu", 5.0).checkpoint_path == "/x.keras"


def test_a_run_cancelled_while_it_goes_back_to_the_queue_ends_cancelled_not_queued(engine):
    """Cancel lands between the worker's stop and the requeue: the requeue resolves both in one
    statement, so the run ends `cancelled` (its epochs kept, no checkpoint to resume) instead of
    waiting in the queue forever, claimed by no worker and skipped by every Cancel."""
    (run_id, other) = submit(engine, [QUICK, QUICK])
    lifecycle.claim(engine, "owner", "h", "cpu", 5.0)
    lifecycle.record_epoch(engine, run_id, "owner", 1, {"loss": 1.0}, 1.0)
    assert lifecycle.request_cancel(engine, run_id) == RunStatus.RUNNING  # after this epoch
    assert lifecycle.requeue(engine, run_id, "owner", "/x.keras", 1, "worker stopped")
    run = find_run(engine, run_id)
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    assert run.checkpoint_path is None and "cancelled while it went back" in run.error
    assert lifecycle.claim(engine, "next", "h", "cpu", 5.0).id == other  # not the cancelled one


def test_a_running_run_cannot_be_deleted_a_finished_one_can(engine):
    (run_id,) = submit(engine, [QUICK])
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    with pytest.raises(ValueError, match="running"):
        delete_run(engine, run_id)
    lifecycle.finish(engine, run_id, RunStatus.CANCELLED, error="x")
    delete_run(engine, run_id)
    assert find_run(engine, run_id) is None
    assert submit(engine, [QUICK]) == [run_id + 1]  # the id is never given out again


def test_many_dashboards_racing_start_exactly_one_worker(engine):
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        workers.claim_worker_start(engine, f"local-{i}", "h", max_age=30)))
        for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


# --- labels (name, tags, comment) and sampled steps ----------------------------------------------
def test_labels_change_only_what_is_given_and_tags_are_clean(engine):
    from cnn_ablation.storage.runs import update_labels

    (run_id,) = submit(engine, [QUICK], name="first")
    assert find_run(engine, run_id).tags == () and find_run(engine, run_id).comment is None
    run = update_labels(engine, run_id, tags=["BN-off", "bn-off", "sweep:2", "a.b_c"])
    assert run.tags == ("a.b_c", "bn-off", "sweep:2") and run.name == "first"
    run = update_labels(engine, run_id, name="renamed", comment="lr too high?\nretry with 1e-4")
    assert (run.name, run.tags, run.comment) == ("renamed", ("a.b_c", "bn-off", "sweep:2"),
                                                 "lr too high?\nretry with 1e-4")
    assert find_run(engine, run_id) == run  # as stored
    assert update_labels(engine, run_id, tags=[], comment="").tags == ()
    assert find_run(engine, run_id).comment is None and find_run(engine, run_id).name == "renamed"
    assert update_labels(engine, run_id) == find_run(engine, run_id)  # nothing given: no change


@pytest.mark.parametrize("given, field", [
    (dict(name="a\x1b[31mred"), "name"), (dict(name="x" * 201), "name"),
    (dict(tags=["has space"]), "tag"), (dict(tags=[""]), "tag"), (dict(tags=["x" * 33]), "tag"),
    (dict(tags=["ok", "no/slash"]), "tag"), (dict(tags=[f"t{i}" for i in range(21)]), "tags"),
    (dict(tags="single-string"), "tags"), (dict(comment="x" * 2001), "comment"),
    (dict(comment="bell\x07"), "comment"),
])
def test_bad_labels_are_refused_naming_the_field_and_nothing_changes(engine, given, field):
    from cnn_ablation.storage.runs import update_labels

    (run_id,) = submit(engine, [QUICK], name="kept")
    update_labels(engine, run_id, tags=["keep"])
    with pytest.raises(ValueError, match=rf"^{field}: .* is not allowed; allowed: "):
        update_labels(engine, run_id, **{"comment": "not written either", **given})
    run = find_run(engine, run_id)
    assert (run.name, run.tags, run.comment) == ("kept", ("keep",), None)


def test_labels_of_a_missing_run(engine):
    from cnn_ablation.storage.runs import update_labels

    with pytest.raises(RunNotFound):
        update_labels(engine, 999, name="x")


def test_steps_are_stored_only_while_the_run_is_ours_and_read_incrementally(engine):
    from cnn_ablation.storage.curves import step_rows

    a, b = submit(engine, [QUICK, QUICK.with_changes(seed=1)])
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    before = clock.now(engine)
    lifecycle.record_steps(engine, a, "w", [(1, 1, 2.3, 0.1), (1, 5, 2.0, None),
                                            (1, 6, float("inf"), None),
                                            (2, 9, float("nan"), 0.3)])
    lifecycle.record_steps(engine, b, "w", [(1, 2, 1.5, 0.5)])
    lifecycle.record_steps(engine, a, "w", [(2, 9, 0.9, 0.4), (2, 12, 1.0, 0.6)])  # 9 again
    lifecycle.record_steps(engine, a, "w", [])
    rows = step_rows(engine, [a, b])
    assert [(r["run_id"], r["epoch"], r["step"], r["loss"], r["accuracy"]) for r in rows] == [
        (a, 1, 1, 2.3, 0.1), (a, 1, 5, 2.0, None), (a, 1, 6, None, None), (a, 2, 9, 0.9, 0.4),
        (a, 2, 12, 1.0, 0.6),
        (b, 1, 2, 1.5, 0.5)]
    assert all(before - 1 <= r["recorded_at"] <= clock.now(engine) + 1 for r in rows)
    assert [(r["run_id"], r["step"]) for r in step_rows(engine, [a, b], after={a: 6})] == [
        (a, 9), (a, 12), (b, 2)]
    assert step_rows(engine, [b], after={b: 2}) == [] and step_rows(engine, []) == []
    with pytest.raises(RunLost):
        lifecycle.record_steps(engine, a, "someone-else", [(2, 13, 1.0, 0.6)])
    lifecycle.finish(engine, a, RunStatus.COMPLETED, worker_id="w")
    with pytest.raises(RunLost):
        lifecycle.record_steps(engine, a, "w", [(2, 14, 1.0, 0.6)])
    assert len(step_rows(engine, [a])) == 5
    delete_run(engine, a)  # the steps go with the run
    assert step_rows(engine, [a]) == [] and len(step_rows(engine, [b])) == 1


def test_progress_text_says_where_a_run_is(engine):
    (run_id,) = submit(engine, [QUICK.with_changes(epochs=10)])
    assert find_run(engine, run_id).progress_text == "queued"
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    assert find_run(engine, run_id).progress_text == "starting"
    lifecycle.report_progress(engine, run_id, "w", "training", 3, 1200, 1407)
    assert find_run(engine, run_id).progress_text == "epoch 3 of 10, batch 1,200 of 1,407"
    lifecycle.report_progress(engine, run_id, "w", "validating", 3, 1407, 1407)
    assert find_run(engine, run_id).progress_text == "epoch 3 of 10: validating"
    lifecycle.report_progress(engine, run_id, "w", "testing", None, 4000, 10000)
    assert find_run(engine, run_id).progress_text == "testing: 4,000 of 10,000 images"
    lifecycle.finish(engine, run_id, RunStatus.COMPLETED, worker_id="w")
    assert find_run(engine, run_id).progress_text == "completed"


def test_deleting_several_runs_is_all_or_nothing(engine):
    from cnn_ablation.storage.curves import epoch_rows, step_rows
    from cnn_ablation.storage.runs import delete_runs

    a, b, c = submit(engine, [QUICK.with_changes(seed=s) for s in range(3)])
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)  # a runs
    lifecycle.record_epoch(engine, a, "w", 1, {"loss": 1.0}, 1.0)
    lifecycle.record_steps(engine, a, "w", [(1, 3, 1.0, 0.5)])
    with pytest.raises(ValueError, match=f"run {a} is running; cancel before deleting"):
        delete_runs(engine, [b, a, c])
    with pytest.raises(RunNotFound):
        delete_runs(engine, [b, 999])
    assert all(find_run(engine, i) is not None for i in (a, b, c))  # nothing went
    lifecycle.finish(engine, a, RunStatus.FAILED, worker_id="w", error="x")
    gone = delete_runs(engine, [c, a, a])
    assert [run.id for run in gone] == [a, c] and gone[0].status == RunStatus.FAILED
    assert find_run(engine, a) is None and find_run(engine, c) is None
    assert find_run(engine, b) is not None and delete_runs(engine, []) == []
    assert epoch_rows(engine, [a]) == [] and step_rows(engine, [a]) == []


def test_sampled_steps_of_a_long_run_stay_bounded_keeping_the_curves_shape(engine):
    """A run-hour samples ~3,600 steps; past MAX_STEP_ROWS every other sample is dropped (the
    newest kept), so no run's rows, or their read-back, grow without bound."""
    from cnn_ablation.storage.curves import step_rows
    from cnn_ablation.storage.lifecycle import MAX_STEP_ROWS

    (run_id,) = submit(engine, [QUICK])
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    total = 5000
    for start in range(1, total + 1, 250):  # flushed in batches, as the recorder does
        lifecycle.record_steps(engine, run_id, "w", [(1, s, 1.0 / s, None)
                                                    for s in range(start, start + 250)])
    rows = step_rows(engine, [run_id])
    steps = [r["step"] for r in rows]
    assert MAX_STEP_ROWS // 2 <= len(steps) <= MAX_STEP_ROWS
    assert steps[-1] == total and steps[0] < total / 50  # the whole run, to its last step
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    # older samples have been thinned more often than newer ones: gaps of 1, 2, 4, 8 steps,
    # never a hole in the curve
    assert gaps <= {1, 2, 4, 8, 16}, gaps
    assert all(r["loss"] == pytest.approx(1.0 / r["step"]) for r in rows)
