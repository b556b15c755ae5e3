"""Service settings, read from the environment and a `.env` file."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from prediction_service.core.schedule import check_cron

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service; each field is the upper-cased environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Where things live
    model_dir: Path = Field(Path("./model_store"), description="Model versions, uploads and job records.")
    penguins_csv: Path = Field(PROJECT_ROOT / "penguins.csv", description="Training data of the penguin model.")
    mnist_data: Path | None = Field(None, description="Local MNIST .npz; unset: Keras downloads it.")
    model_store_url: str | None = Field(
        None, description="s3://bucket/prefix: versions, uploads and data in object storage; unset: MODEL_DIR."
    )
    database_url: SecretStr | None = Field(
        None,
        description="postgresql://...: jobs, pointers and the learning loop's records; unset: SQLite in MODEL_DIR.",
    )

    # First training of the mnist model
    mnist_epochs: int = Field(15, ge=1)
    mnist_train_size: int | None = Field(None, ge=1)

    # Retraining
    admin_token: SecretStr | None = Field(None, description="Bearer token for management; unset: generated.")
    retrain_epochs: int = Field(15, ge=1)
    retrain_batch_size: int = Field(128, ge=1)
    retrain_validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    # Fine-tuning takes smaller steps than the first training (Adam's 0.001): it adapts the model
    # to the upload without forgetting what the hold-out set measures.
    retrain_learning_rate: float = Field(0.0003, gt=0, le=1)
    # Earlier training data mixed into each job, so that fine-tuning does not forget the classes an upload
    # lacks; with 2,000 a 1,000-image job of 15 epochs takes ~16-19 s on 2 cores (~9-12 s without).
    retrain_replay_size: int = Field(2000, ge=0, description="Replayed earlier images per retraining job.")
    retrain_gate_margin: float = Field(0.01, ge=0.0, le=1.0, description="Allowed hold-out accuracy drop.")
    training_threads: int = Field(1, ge=1, description="TensorFlow threads of a retraining job.")
    training_niceness: int = Field(10, ge=0, le=19, description="OS priority drop of a retraining job.")
    decode_processes: int = Field(2, ge=0, le=32, description="Processes decoding uploaded zips; 0: in-process.")
    run_training: bool = Field(True, description="This process runs training jobs; false: it only queues them.")
    job_lease_seconds: float = Field(
        30.0, gt=0, description="Seconds of a training job's lease: renewed as it runs; expired: retried."
    )

    # Input limits
    max_image_bytes: int = Field(10 * MIB, ge=1)
    max_image_pixels: int = Field(25_000_000, ge=1)
    max_upload_bytes: int = Field(256 * MIB, ge=1)
    max_zip_entries: int = Field(100_000, ge=1)
    max_zip_uncompressed_bytes: int = Field(1024 * MIB, ge=1)
    max_zip_compression_ratio: float = Field(100.0, gt=1.0)
    max_batch_items: int = Field(256, ge=1, description="Rows or files in one batch request.")
    max_csv_rows: int = Field(100_000, ge=1, description="Rows of a CSV of labelled penguins.")
    max_csv_bytes: int = Field(10 * MIB, ge=1, description="Bytes of a CSV of labelled penguins.")

    # Serving
    reload_interval: float = Field(0.5, gt=0, description="Seconds between checks for a new serving version.")
    batch_max_size: int = Field(64, ge=1, description="Images per inference call.")
    batch_max_wait_ms: float = Field(0.0, ge=0, description="Wait for more images before an inference call.")
    batch_queue_size: int = Field(1024, ge=1, description="Images waiting; beyond it: 503.")
    inference_threads: int = Field(1, ge=1, description="ONNX Runtime threads of the mnist model's process.")
    request_timeout: float = Field(30.0, gt=0, description="Seconds a client may take to send its body.")
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client may take to send its request headers.")

    # The learning loop
    prediction_log_max: int = Field(
        100_000, ge=0, description="Predictions kept so that feedback can refer to them; 0: none (no feedback)."
    )
    feedback_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer tokens that may send feedback, and do nothing else."
    )
    retrain_min_examples: int = Field(200, ge=1, description="New labelled examples that start an automatic job.")
    retrain_schedule: str | None = Field(
        None, description="Cron expression: check the threshold only then; unset: as soon as it is reached."
    )
    shadow_sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of live requests a shadow version also answers (0-1)."
    )

    # Logs
    log_level: str = "INFO"
    json_logs: bool = False

    # Notifications
    webhook_urls: Annotated[list[AnyHttpUrl], NoDecode] = Field(default_factory=list)
    webhook_secret: SecretStr | None = None
    webhook_backoff_seconds: float = Field(1.0, ge=0, description="First retry delay; doubles each time.")
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    notify_email_from: str = "prediction-service@localhost"
    notify_email_to: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("webhook_urls", "notify_email_to", "feedback_tokens", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("model_store_url")
    @classmethod
    def _valid_store_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from prediction_service.storage.objects import parse_store_url  # boto3: only when it is used

        parse_store_url(value.strip())  # says what a good one looks like
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must be a postgresql:// URL (or be unset: SQLite in MODEL_DIR)")
        return value

    @field_validator("retrain_schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_cron(value.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()
