"""KVM bindings: the only package that issues ioctls."""

from .api import KICK_SIGNAL, Kvm, Vcpu, Vm, install_kick_handler, kick_thread

__all__ = ["KICK_SIGNAL", "Kvm", "Vcpu", "Vm", "install_kick_handler", "kick_thread"]
