from pathlib import Path

import numpy as np
import pytest

from prediction_service.models.penguins import knn as penguins

CSV = Path(__file__).resolve().parents[3] / "penguins.csv"


@pytest.fixture(scope="module")
def trained() -> penguins.TrainedPenguins:
    return penguins.train(CSV)


def test_training_follows_the_tutorial(trained: penguins.TrainedPenguins) -> None:
    # 344 rows, 11 with a missing value: 333 left, split 75/25 with stratification.
    assert (trained.train_rows, trained.test_rows) == (249, 84)
    assert trained.species == ["Adelie", "Chinstrap", "Gentoo"]
    knn = trained.pipeline.named_steps["knn"]
    assert knn.n_neighbors == 11
    assert list(trained.pipeline.named_steps) == ["scaler", "knn"]
    assert 0.9 <= trained.test_accuracy <= 1.0


def test_the_fast_path_agrees_with_scikit_learn(trained: penguins.TrainedPenguins, tmp_path: Path) -> None:
    trained.save(tmp_path)
    classifier = penguins.PenguinClassifier.load(tmp_path)
    grid = np.array([(bill, flipper) for bill in np.arange(30, 62, 0.5) for flipper in np.arange(170, 235, 2.0)])
    rows = np.vstack([grid, trained.train_features, trained.test_features])
    expected = trained.pipeline.predict_proba(rows)
    assert np.array_equal(classifier.probabilities(rows), expected)  # exactly, ties at equal distance too
    single = [list(classifier.predict(bill, flipper).probabilities.values()) for bill, flipper in rows.tolist()]
    assert np.array_equal(np.array(single), expected)


def test_ties_at_equal_distance_are_broken_as_the_pipeline_breaks_them(trained: penguins.TrainedPenguins) -> None:
    """Every training row twice, the copies of some species shifted: many neighbours at equal distance whose
    species differ. Which of them count is the pipeline's choice; the fast path must make the same."""
    features = np.vstack([trained.train_features, trained.train_features])
    labels = np.concatenate([trained.train_labels, (trained.train_labels + 1) % 3])
    pipeline = penguins.fit_pipeline(features, labels)
    classifier = penguins.PenguinClassifier(
        pipeline, trained.species, features, labels, penguins.feature_ranges(features)
    )
    rows = np.vstack([penguins.plausible_grid(), features])
    assert len(penguins.fast_path_disagreements(classifier, rows)) == 0


def test_a_typical_adelie(trained: penguins.TrainedPenguins, tmp_path: Path) -> None:
    trained.save(tmp_path)
    prediction = penguins.PenguinClassifier.load(tmp_path).predict(40.3, 195)
    assert prediction.species == "Adelie"
    assert prediction.probabilities["Adelie"] >= 0.5
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.warnings == []


def test_inputs_unlike_the_training_data_get_a_warning(trained: penguins.TrainedPenguins, tmp_path: Path) -> None:
    trained.save(tmp_path)
    prediction = penguins.PenguinClassifier.load(tmp_path).predict(400.0, 195)
    assert prediction.species in trained.species
    assert len(prediction.warnings) == 1
    assert "bill_length_mm=400" in prediction.warnings[0]
    assert "unlike the training data" in prediction.warnings[0]
