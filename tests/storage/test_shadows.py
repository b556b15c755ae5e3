from pathlib import Path

from prediction_service.storage.postgres import Postgres
from prediction_service.storage.shadows import ShadowAnswer, ShadowCounts, ShadowRecords


def test_counts_from_several_processes_add_up(records_home: Path | Postgres) -> None:
    first, second = ShadowRecords(records_home, 100), ShadowRecords(records_home, 100)
    first.add({("mnist", 2): ShadowCounts(compared=3, agreed=2)}, [])
    second.add(
        {("mnist", 2): ShadowCounts(compared=4, agreed=4, dropped=1), ("penguins", 3): ShadowCounts(failed=2)},
        [],
    )
    assert first.counts("mnist", 2) == ShadowCounts(compared=7, agreed=6, dropped=1)
    assert second.counts("penguins", 3) == ShadowCounts(failed=2)
    assert first.counts("mnist", 9) == ShadowCounts()


def test_a_label_scores_both_versions_and_a_second_label_replaces_the_first(records_home: Path | Postgres) -> None:
    records = ShadowRecords(records_home, 100)
    records.add(
        {("mnist", 2): ShadowCounts(compared=2, agreed=1)},
        [ShadowAnswer("a", "mnist", 2, "7", "1"), ShadowAnswer("b", "mnist", 2, "3", "3")],
    )
    assert records.record_label("a", "1")  # the shadow was right, the serving version wrong
    assert records.record_label("b", "3")  # both right
    counts = records.counts("mnist", 2)
    assert (counts.labelled, counts.shadow_correct, counts.serving_correct) == (2, 2, 1)

    assert records.record_label("a", "7")  # corrected: now the serving version was right
    counts = records.counts("mnist", 2)
    assert (counts.labelled, counts.shadow_correct, counts.serving_correct) == (2, 1, 2)
    assert records.record_label("a", "7")  # the same label again changes nothing
    assert records.counts("mnist", 2) == counts

    assert not records.record_label("never-compared", "7")
    assert records.counts("mnist", 2) == counts


def test_only_the_newest_answers_are_kept(records_home: Path | Postgres) -> None:
    records = ShadowRecords(records_home, max_answers=2)
    for name in ("a", "b", "c"):
        records.add({("mnist", 2): ShadowCounts(compared=1)}, [ShadowAnswer(name, "mnist", 2, "1", "1")])
    assert not records.record_label("a", "1")  # dropped: the oldest
    assert records.record_label("b", "1")
    assert records.record_label("c", "1")
    assert records.counts("mnist", 2).compared == 3  # the figures keep counting


def test_with_no_answers_kept_the_figures_still_count(records_home: Path | Postgres) -> None:
    records = ShadowRecords(records_home, max_answers=0)
    records.add({("mnist", 2): ShadowCounts(compared=1, agreed=1)}, [ShadowAnswer("a", "mnist", 2, "1", "1")])
    assert not records.record_label("a", "1")
    assert records.counts("mnist", 2) == ShadowCounts(compared=1, agreed=1)
