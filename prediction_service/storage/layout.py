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
