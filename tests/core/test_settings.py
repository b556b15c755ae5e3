from pathlib import Path

import pytest

from prediction_service.core.settings import Settings


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings(_env_file=None)
    assert settings.model_dir == Path("./model_store")
    assert settings.mnist_data is None
    assert settings.mnist_epochs == 15
    assert settings.mnist_train_size is None
    assert settings.admin_token is None


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("MNIST_DATA", "/data/mnist.npz")
    monkeypatch.setenv("MNIST_EPOCHS", "3")
    monkeypatch.setenv("MNIST_TRAIN_SIZE", "500")
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("WEBHOOK_URLS", "http://a.example/hook, http://b.example/hook")
    settings = Settings(_env_file=None)
    assert settings.model_dir == tmp_path
    assert settings.mnist_data == Path("/data/mnist.npz")
    assert (settings.mnist_epochs, settings.mnist_train_size) == (3, 500)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "s3cret"
    assert [str(url) for url in settings.webhook_urls] == ["http://a.example/hook", "http://b.example/hook"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MNIST_EPOCHS=4\nMODEL_DIR=/srv/models\n")
    settings = Settings(_env_file=env_file)
    assert settings.mnist_epochs == 4
    assert settings.model_dir == Path("/srv/models")


def test_the_secret_token_is_not_shown_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret-value")
    assert "s3cret-value" not in repr(Settings(_env_file=None))


def test_nonsense_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_EPOCHS", "0")
    with pytest.raises(ValueError, match="mnist_epochs"):
        Settings(_env_file=None)
