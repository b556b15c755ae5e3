"""What a model version was made with, for its manifest."""

import platform
from importlib import metadata

LIBRARIES = ("numpy", "pandas", "scikit-learn", "keras", "tensorflow", "tensorflow-cpu", "pillow")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
