"""The host side of the bundled guest's Linux personality: what the guest runs."""

from .bundle import BundleError, build_bundle

__all__ = ["BundleError", "build_bundle"]
