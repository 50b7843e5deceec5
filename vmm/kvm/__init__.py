"""KVM bindings: the only package that issues ioctls."""

from .api import KICK_SIGNAL, Kvm, Vcpu, Vm, install_kick_handler

__all__ = ["KICK_SIGNAL", "Kvm", "Vcpu", "Vm", "install_kick_handler"]
