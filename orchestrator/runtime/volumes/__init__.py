"""Named volumes: the store under the state root, copy-up of image content, and who uses what.

`VolumeStore` keeps `volumes/<name>/_data` and its `volume.json`;
`copy_into_volume` fills an empty volume from the image at first mount (run by
the launcher); `volumes_in_use` reads the containers' configs to say which
containers mount which volume, so `rm` and `prune` leave those alone.
"""

from orchestrator.runtime.volumes.copyup import copy_into_volume
from orchestrator.runtime.volumes.in_use import volumes_in_use
from orchestrator.runtime.volumes.store import (
    ANONYMOUS_LABEL,
    Volume,
    VolumeStore,
    validate_volume,
)

__all__ = [
    "ANONYMOUS_LABEL", "Volume", "VolumeStore", "copy_into_volume", "validate_volume",
    "volumes_in_use",
]
