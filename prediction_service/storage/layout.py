"""Every name in MODEL_DIR, in one place:

MODEL_DIR/
  admin_token                   the generated admin token (mode 0600)
  jobs.sqlite3                  retraining job records
  learning.sqlite3              the prediction log and the learning loop's records (feedback, shadow)
  uploads/<job id>/             an accepted upload: dataset.npz and manifest.json
  uploads/.incoming-*.zip       a received zip while it is checked
  <model>/<version>/            manifest.json and the artifacts; immutable once renamed into place
  <model>/serving.json          which version serves (written last)
  <model>/shadow.json           which version answers beside it as the shadow (absent: none)
  <model>/holdout.npz           files kept beside the versions (e.g. the fixed hold-out set)
  <model>/.<purpose>.lock       locks shared by every process using MODEL_DIR
  .admin_token.lock             held while the admin token is generated
  .tmp-*                        (in uploads/ and <model>/) a folder being written; never read

With MODEL_STORE_URL=s3://bucket/prefix, versions, shared files and uploads live in the object store
(MODEL_DIR keeps the pointers, the databases and a cache of the versions, laid out as above):

prefix/
  <model>/versions/<version>.json   a version's manifest: it exists once this does (written last, only if absent)
  <model>/files/<sha256>            a version's files, named by their hash (immutable; shared by equal files)
  <model>/shared/<file>             files kept beside the versions (holdout.npz, replay-initial.npz)
  uploads/<job id>/dataset.npz      an accepted upload, then its manifest.json
"""

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
POINTER = "serving.json"
SHADOW_POINTER = "shadow.json"
DATASET = "dataset.npz"
HOLDOUT = "holdout.npz"
REPLAY_INITIAL = "replay-initial.npz"
STAGING_PREFIX = ".tmp-"
INCOMING_PREFIX = ".incoming-"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def admin_token(self) -> Path:
        return self.root / "admin_token"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs.sqlite3"

    @property
    def learning(self) -> Path:
        return self.root / "learning.sqlite3"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def model(self, name: str) -> Path:
        return self.root / name

    def lock(self, name: str, purpose: str) -> Path:
        return self.model(name) / f".{purpose}.lock"


class ObjectLayout:
    """Every key in the object store (relative to MODEL_STORE_URL's prefix)."""

    UPLOADS = "uploads/"

    @staticmethod
    def manifests(name: str) -> str:
        return f"{name}/versions/"

    @staticmethod
    def manifest(name: str, version: int) -> str:
        return f"{name}/versions/{version}.json"

    @staticmethod
    def files(name: str) -> str:
        return f"{name}/files/"

    @staticmethod
    def file(name: str, sha256: str) -> str:
        return f"{name}/files/{sha256}"

    @staticmethod
    def shared(name: str, filename: str) -> str:
        return f"{name}/shared/{filename}"

    @staticmethod
    def upload(upload_id: str, filename: str) -> str:
        return f"uploads/{upload_id}/{filename}"
