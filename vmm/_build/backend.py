"""PEP 517 build backend: setuptools, plus the cffi KVM extension.

The project keeps no setup.py, and pyproject.toml cannot pass setuptools the
``cffi_modules`` keyword, so this thin in-tree backend runs setuptools' own
backend with that keyword added, and the `vmm` command as a script file
(scripts/vmm: leaner than the wrapper an installer writes for an entry point).
Everything else is stock setuptools.
"""

from setuptools import build_meta as _setuptools

_CFFI_MODULES = ["vmm/kvm/ffi_build.py:ffibuilder"]
_SCRIPTS = ["vmm/_build/scripts/vmm"]


class _Backend(_setuptools._BuildMetaBackend):
    def run_setup(self, setup_script="setup.py"):
        from setuptools import setup

        setup(cffi_modules=_CFFI_MODULES, scripts=_SCRIPTS)


_backend = _Backend()

get_requires_for_build_wheel = _backend.get_requires_for_build_wheel
get_requires_for_build_sdist = _backend.get_requires_for_build_sdist
get_requires_for_build_editable = _backend.get_requires_for_build_editable
prepare_metadata_for_build_wheel = _backend.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _backend.prepare_metadata_for_build_editable
build_wheel = _backend.build_wheel
build_sdist = _backend.build_sdist
build_editable = _backend.build_editable
