"""Which framework version saved a model, beside the one installed: a difference is logged at
load, and a load that fails names both versions and the image build that would load the model.

Model files from another release of their framework are the most common reason a model that
worked where it was trained fails (or misbehaves) when served; the runtime reads the version
from the files (each framework records it its own way) and this says what to do about it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedWith:
    framework: str  # as users know it: "scikit-learn"
    runtime: str  # the runtime's module (`__name__`): its package names its image
    saved: str | None  # the version that saved the model, when its files say
    installed: str

    @property
    def differs(self) -> bool:
        # A local build tag (torch's "+cpu") is the same release.
        return bool(self.saved) and self.saved.split("+")[0] != self.installed.split("+")[0]

    def log_difference(self, what: str) -> None:
        if self.differs:
            log.warning("%s was saved with %s %s; this server runs %s%s", what,
                        self.framework, self.saved, self.installed, self._build())

    def advice(self) -> str:
        """What a failed load's error adds: both versions and the build of an image that has
        the saving version; nothing when they agree or the files do not say."""
        if not self.differs:
            return ""
        return (f" (saved with {self.framework} {self.saved}; this server runs "
                f"{self.installed}{self._build()})")

    @property
    def image(self) -> str:
        """As docker/images.txt and `make build-<image>` name it: the runtime's package."""
        return self.runtime.partition(".")[0]

    def _build(self) -> str:
        return (f": an image built with `make build-{self.image} "
                f"FRAMEWORK_VERSION={self.saved}` has the version that saved it")
